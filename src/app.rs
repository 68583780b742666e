//! Runs a parsed command: sets up logging and the runtime, then hands the command's arguments to
//! the one file that runs it and renders its report (`app/<command>.rs`), all through one printer
//! ([`output::Output`]).

mod download;
mod hash;
mod help;
mod md5;
mod output;
mod shard;
mod upload;
mod uploads;
mod verify;

use crate::cli::{Cli, Command};
use crate::error::EXIT_OK;
use output::{Output, init_logging};

/// Runs `cli` and returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let output = match &cli.command {
        Command::Completions(a) => return help::completions(a.shell),
        Command::Man => return help::man_page(),
        Command::Upload(a) => &a.output,
        Command::Verify(a) => &a.output,
        Command::Download(a) => &a.output,
        Command::Hash(a) => &a.output,
        Command::Md5(a) => &a.output,
        Command::Uploads(a) => &a.output,
        Command::Abort(a) => &a.output,
        Command::Shard(c) => c.output(),
    };
    init_logging(output);
    let out = Output::from(output);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime can be built");
    match &cli.command {
        Command::Upload(args) => upload::run(args, &out, &runtime),
        Command::Verify(args) => verify::run(args, &out, &runtime),
        Command::Download(args) => download::run(args, &out, &runtime),
        Command::Hash(args) => hash::run(args, &out, &runtime),
        Command::Md5(args) => md5::run(args, &out, &runtime),
        Command::Uploads(args) => uploads::list(args, &out, &runtime),
        Command::Abort(args) => uploads::abort(args, &out, &runtime),
        Command::Shard(c) => runtime.block_on(shard::run(c, &out)),
        // Answered above, before logging and the runtime.
        Command::Completions(_) | Command::Man => EXIT_OK,
    }
}
