//! `tally completions` and `tally man`: the shell completions and the manual page, generated
//! from the same definitions as `--help`.

use crate::cli::Cli;
use crate::error::{EXIT_ERROR, EXIT_OK};

/// `tally completions SHELL` or `tally man`.
pub(crate) enum Job {
    Completions(clap_complete::Shell),
    Man,
}

/// Prints it; returns the exit code.
pub(crate) fn run(job: Job) -> i32 {
    match job {
        Job::Completions(shell) => completions(shell),
        Job::Man => man_page(),
    }
}

/// Writes the completion script for `shell` to standard output.
fn completions(shell: clap_complete::Shell) -> i32 {
    use clap::CommandFactory as _;
    clap_complete::generate(shell, &mut Cli::command(), "tally", &mut std::io::stdout());
    EXIT_OK
}

/// Writes the manual page (roff) to standard output.
fn man_page() -> i32 {
    use clap::CommandFactory as _;
    match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("tally: error: writing the manual page: {e}");
            EXIT_ERROR
        }
    }
}
