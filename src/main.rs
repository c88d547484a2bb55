#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    varde::cli::run(varde::cli::Cli::parse())
}
