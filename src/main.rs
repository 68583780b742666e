//! The `tally` binary: parse, run, map the outcome to an exit code.

use clap::Parser as _;

fn main() {
    let cli = tally::cli::Cli::parse();
    std::process::exit(tally::app::run(cli));
}
