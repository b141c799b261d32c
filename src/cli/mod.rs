//! Subcommands of `opsbook`.

mod actions;
mod graph;
mod output;
mod progress;
mod registry;
mod run;
mod runs;
mod validate;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// Exit code for a valid runbook or a successful command.
pub const EXIT_OK: u8 = 0;
/// Exit code for an invalid runbook or bad usage.
pub const EXIT_INVALID: u8 = 2;

#[derive(Parser)]
#[command(
    name = "opsbook",
    version,
    about = "Runbooks as code: YAML DAGs of steps that call shell, SSH, HTTP, AWS, Kubernetes and more.",
    long_about = "opsbook reads runbooks: YAML files that describe a DAG of steps, each calling an \
                  action (shell, ssh.run, http.request, k8s.delete …) with Jinja templates, retries, \
                  timeouts, conditions, fan-out and rollback.\n\nThe format is described in docs/format.md; \
                  `opsbook schema` prints the JSON Schema editors use for completion.",
    after_help = "Examples:\n  opsbook run runbooks/disk-usage.yaml\n  opsbook validate runbooks/\n  opsbook validate deploy.yaml -p environment=prod\n  \
                  opsbook graph deploy.yaml --format mermaid\n  opsbook actions shell\n  opsbook completions bash > /etc/bash_completion.d/opsbook"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Run(run::Args),
    Resume(run::ResumeArgs),
    Runs(runs::Args),
    Validate(validate::Args),
    Graph(graph::Args),
    Schema(SchemaArgs),
    Actions(actions::Args),
    Completions(CompletionsArgs),
}

/// Print the JSON Schema of the runbook format.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  opsbook schema > runbook.schema.json\n\n\
Editors pick it up from a first line such as:\n  # yaml-language-server: $schema=../schemas/runbook.schema.json")]
struct SchemaArgs {}

/// Print a shell completion script.
#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  opsbook completions bash > ~/.local/share/bash-completion/completions/opsbook\n  \
opsbook completions zsh > \"${fpath[1]}/_opsbook\"\n  opsbook completions fish > ~/.config/fish/completions/opsbook.fish"
)]
struct CompletionsArgs {
    /// The shell.
    shell: clap_complete::Shell,
}

/// Parses the command line and runs the subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Resume(args) => run::resume(args),
        Command::Runs(args) => runs::run(args),
        Command::Validate(args) => validate::run(args),
        Command::Graph(args) => graph::run(args),
        Command::Schema(_) => {
            print!("{}", opsbook_engine::schema::runbook_schema_text());
            EXIT_OK
        }
        Command::Actions(args) => actions::run(args),
        Command::Completions(args) => {
            let mut cmd = Cli::command();
            clap_complete::generate(args.shell, &mut cmd, "opsbook", &mut std::io::stdout());
            EXIT_OK
        }
    };
    ExitCode::from(code)
}
