//! The `weir` command: the operator and the tools around it.

use std::process::ExitCode;

fn main() -> ExitCode {
    match weir::cli::Cli::from_env().run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
