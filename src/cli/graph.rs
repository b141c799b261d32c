//! `opsbook graph FILE`

use std::path::PathBuf;

use clap::ValueEnum;
use opsbook_engine::graph::{render, GraphFormat, RunbookGraph};
use opsbook_engine::Validator;

use super::output::{render as render_diags, ColorChoice, DiagFormat};
use super::{registry, EXIT_INVALID, EXIT_OK};

/// Output format of the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Levels of steps that can run together.
    Text,
    /// Graphviz dot (`| dot -Tsvg > graph.svg`).
    Dot,
    /// A Mermaid flowchart (renders in GitHub Markdown).
    Mermaid,
}

/// Show the DAG of a runbook: which steps wait for which, level by level.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  opsbook graph deploy.yaml\n  opsbook graph deploy.yaml --format dot | dot -Tsvg > deploy.svg\n  \
opsbook graph deploy.yaml --format mermaid >> README.md"
)]
pub struct Args {
    /// The runbook.
    file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Runs `opsbook graph`.
pub fn run(args: Args) -> u8 {
    let registry = registry::registry();
    let validator = Validator::new(&registry);
    let checked = validator.check_file(&args.file, None);
    let Some(runbook) = checked.runbook.as_ref().filter(|_| checked.is_valid()) else {
        eprint!(
            "{}",
            render_diags(
                &checked.diagnostics,
                &checked.source,
                DiagFormat::Text,
                ColorChoice::Auto.enabled()
            )
        );
        return EXIT_INVALID;
    };
    match RunbookGraph::of(runbook) {
        Ok(graph) => {
            let format = match args.format {
                Format::Text => GraphFormat::Text,
                Format::Dot => GraphFormat::Dot,
                Format::Mermaid => GraphFormat::Mermaid,
            };
            print!("{}", render(runbook, &graph, format));
            EXIT_OK
        }
        Err(errors) => {
            eprintln!("error: the graph cannot be built: {errors:?}");
            EXIT_INVALID
        }
    }
}
