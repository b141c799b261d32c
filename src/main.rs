//! The `opsbook` command line: argument parsing, wiring and output. No engine logic lives here.

mod cli;

/// opsbook allocates many small values (YAML nodes, strings, maps); mimalloc is markedly faster
/// at that than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
