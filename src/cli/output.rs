//! Printing diagnostics.

use std::io::IsTerminal;

use clap::ValueEnum;
use opsbook_engine::{Diagnostic, Source};

/// How diagnostics are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiagFormat {
    /// Each problem with a snippet of the file (for people).
    Text,
    /// One line per problem: `file:line:column: error[code]: message` (for editors and grep).
    Short,
    /// A JSON document (for CI and tools).
    Json,
}

/// When to use color.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless NO_COLOR is set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

impl ColorChoice {
    /// Whether to color standard output.
    pub fn enabled(self) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        }
    }
}

/// At most this many problems of one file are printed as text (JSON has them all).
const MAX_SHOWN: usize = 200;

/// Renders diagnostics of one file as text or short lines.
pub fn render(diags: &[Diagnostic], source: &Source, format: DiagFormat, color: bool) -> String {
    let mut out = String::new();
    for d in diags.iter().take(MAX_SHOWN) {
        match format {
            DiagFormat::Short => {
                out.push_str(&d.short());
                out.push('\n');
            }
            _ => {
                out.push_str(&d.pretty(source, color));
                out.push('\n');
            }
        }
    }
    if diags.len() > MAX_SHOWN {
        out.push_str(&format!(
            "{}: … and {} more problems (`--format json` lists them all)\n",
            source.name(),
            diags.len() - MAX_SHOWN
        ));
    }
    out
}
