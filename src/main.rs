//! The `tally` binary: cap malloc's arenas, parse, run, map the outcome to an exit code.

fn main() {
    // SAFETY: the first thing the process does, before any thread is started (nothing in tally
    // or its dependencies starts one before `main`).
    unsafe { tally::limit_malloc_arenas() };
    let cli = match <tally::cli::Cli as clap::Parser>::try_parse() {
        Ok(cli) => cli,
        Err(e) => std::process::exit(tally::cli::usage_error(e)),
    };
    std::process::exit(tally::app::run(cli));
}
