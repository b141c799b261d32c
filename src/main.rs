//! The `opsbook` command line: argument parsing, wiring and output. No engine logic lives here.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
