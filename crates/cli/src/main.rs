//! `hush`: the relay, its admin commands and the client commands, in one
//! binary. This file parses flags and hands off to `commands`; all real work
//! lives in the library crates.

mod cli;
mod commands;
mod output;
mod release;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    if let Err(error) = commands::run(cli) {
        eprintln!("hush: {error:#}");
        std::process::exit(1);
    }
}
