//! `vmdesk`: the desktop VM manager. With no arguments it will open the GUI (not built yet);
//! subcommands manage VMs and images from the command line. Errors are one line on stderr;
//! exit status 2 for bad usage (clap's), 1 for a command that failed.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vmdesk::disk;

#[derive(Parser, Debug)]
#[command(name = "vmdesk", version, about = "Desktop virtual machine manager")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Disk images.
    #[command(subcommand)]
    Disk(disk::DiskCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Disk(cmd)) => disk::run(cmd),
        None => {
            println!("vmdesk: the desktop app is not built yet");
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmdesk: {e:#}");
            ExitCode::FAILURE
        }
    }
}
