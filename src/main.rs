//! The `blockwise` command. Thin: parse arguments, run the command, map errors to exit codes.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
