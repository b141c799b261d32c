//! `opsbook validate PATH...`

use std::path::{Path, PathBuf};

use opsbook_engine::validate::{parse_assignment, GivenParam, GivenParams};
use opsbook_engine::Validator;
use serde_json::{json, Value};

use super::output::{render, ColorChoice, DiagFormat};
use super::{registry, EXIT_INVALID, EXIT_OK};

/// Check runbooks without running them: YAML, schema, ids, needs, cycles, actions and their
/// inputs, templates, and (with -p / --params-file) params.
#[derive(clap::Args)]
#[command(
    after_help = "Exit status: 0 when every runbook is valid, 2 when any is not.\n\n\
Examples:\n  opsbook validate runbooks/\n  opsbook validate deploy.yaml -p environment=prod -p replicas=3\n  \
opsbook validate runbooks/ --format json > validate.json\n  opsbook validate deploy.yaml --format short   # file:line:col lines for editors"
)]
pub struct Args {
    /// Runbook files, or folders to search for *.yaml and *.yml runbooks.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Check these params as a run would: `-p name=value` (typed by the param's declared type).
    /// With -p or --params-file, required params must be given.
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE", value_parser = parse_assignment)]
    params: Vec<(String, String)>,
    /// A YAML or JSON file of params (`name: value`); -p wins over it.
    #[arg(long, value_name = "FILE")]
    params_file: Option<PathBuf>,
    /// How to print problems.
    #[arg(long, value_enum, default_value_t = DiagFormat::Text)]
    format: DiagFormat,
    /// When to use color.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
}

/// Loads `--params-file` and `-p` into one map (-p last, so it wins).
pub fn given_params(
    file: Option<&Path>,
    assignments: &[(String, String)],
) -> Result<Option<GivenParams>, String> {
    if file.is_none() && assignments.is_empty() {
        return Ok(None);
    }
    let mut given = GivenParams::new();
    if let Some(f) = file {
        let text = std::fs::read_to_string(f)
            .map_err(|e| format!("cannot read params file {}: {e}", f.display()))?;
        let v: Value = opsbook_engine::yaml::parse_value(&text)
            .map_err(|e| format!("params file {}: {e}", f.display()))?;
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    given.insert(k, GivenParam::Value(v));
                }
            }
            Value::Null => {}
            _ => {
                return Err(format!(
                    "params file {}: expected a mapping of name: value",
                    f.display()
                ))
            }
        }
    }
    for (k, v) in assignments {
        given.insert(k.clone(), GivenParam::Text(v.clone()));
    }
    Ok(Some(given))
}

/// The files to check: files as given, and in folders every `*.yaml` / `*.yml` that looks like a
/// runbook (a top-level `version:` or `steps:` line). The second list holds the YAML files a
/// folder search passed over, so that nothing is skipped silently.
pub fn runbook_files(paths: &[PathBuf]) -> Result<(Vec<PathBuf>, Vec<PathBuf>), String> {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found).map_err(|e| format!("cannot read folder {}: {e}", p.display()))?;
            found.sort();
            for f in found {
                if looks_like_runbook(&f) {
                    out.push(f);
                } else {
                    skipped.push(f);
                }
            }
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(format!("{}: no such file or folder", p.display()));
        }
    }
    Ok((out, skipped))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') {
            continue;
        }
        // Symlinked folders are not followed: a link to a parent would loop.
        let kind = entry.file_type()?;
        let yaml = name.ends_with(".yaml") || name.ends_with(".yml");
        if kind.is_dir() {
            walk(&path, out)?;
        } else if yaml && (kind.is_file() || (kind.is_symlink() && path.is_file())) {
            out.push(path);
        }
    }
    Ok(())
}

fn looks_like_runbook(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return true;
    };
    text.lines()
        .any(|l| l.starts_with("steps:") || l.starts_with("version:"))
}

/// Runs `opsbook validate`.
pub fn run(args: Args) -> u8 {
    let given = match given_params(args.params_file.as_deref(), &args.params) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_INVALID;
        }
    };
    let (files, skipped) = match runbook_files(&args.paths) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_INVALID;
        }
    };
    if files.is_empty() {
        eprintln!(
            "error: no runbooks found in {}",
            args.paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return EXIT_INVALID;
    }
    let registry = registry::registry();
    let validator = Validator::new(&registry);
    let color = args.color.enabled();
    let mut invalid = 0usize;
    let mut problems = 0usize;
    let mut reports = Vec::new();
    for file in &files {
        let checked = validator.check_file(file, given.as_ref());
        problems += checked.diagnostics.len();
        if !checked.is_valid() {
            invalid += 1;
        }
        match args.format {
            DiagFormat::Json => reports.push(json!({
                "file": checked.source.name(),
                "valid": checked.is_valid(),
                "diagnostics": checked.diagnostics,
            })),
            format => {
                if checked.is_valid() {
                    if format == DiagFormat::Text {
                        println!("ok: {}", checked.source.name());
                    }
                } else {
                    print!(
                        "{}",
                        render(&checked.diagnostics, &checked.source, format, color)
                    );
                }
            }
        }
    }
    match args.format {
        DiagFormat::Json => {
            let doc = json!({
                "valid": invalid == 0,
                "checked": files.len(),
                "invalid": invalid,
                "files": reports,
                "skipped": skipped.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        DiagFormat::Text => {
            for f in &skipped {
                println!(
                    "skipped: {} (not a runbook: no top-level `version:` or `steps:`)",
                    f.display()
                );
            }
            let noun = if files.len() == 1 {
                "runbook"
            } else {
                "runbooks"
            };
            if invalid == 0 {
                println!("{} {noun} valid", files.len());
            } else {
                println!(
                    "{invalid} of {} {noun} invalid, {problems} problem{}",
                    files.len(),
                    if problems == 1 { "" } else { "s" }
                );
            }
        }
        DiagFormat::Short => {}
    }
    if invalid == 0 {
        EXIT_OK
    } else {
        EXIT_INVALID
    }
}
