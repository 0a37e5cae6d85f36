//! `vmdesk`: the desktop VM manager. With no arguments it opens the window;
//! subcommands manage VMs and images from the command line. Errors are one line on stderr
//! (naming the VM and the cause); exit status 2 for bad usage, 1 for a command that failed.

use std::process::ExitCode;

use clap::Parser;
use vmdesk::cli::{self, Usage};

#[derive(Parser, Debug)]
#[command(name = "vmdesk", version, about = "Desktop virtual machine manager")]
struct Cli {
    #[command(subcommand)]
    command: Option<cli::Command>,
}

fn main() -> ExitCode {
    // Logs only when asked for (`VMDESK_LOG=debug`, or per module as tracing's filters
    // take it): by default vmdesk's output is its own lines, nothing else.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("VMDESK_LOG") {
        use std::io::IsTerminal;
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .init();
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A value an option's parser refused (--network, --forward, --memory …): one line,
        // as vmdesk's own errors are, with the same exit status 2. Clap's other errors
        // (unknown options, --help) keep their own form.
        Err(e) if e.kind() == clap::error::ErrorKind::ValueValidation => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            eprintln!("vmdesk: {}", first.strip_prefix("error: ").unwrap_or(first));
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Some(cmd) => cli::run(cmd),
        None => vmdesk::gui::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmdesk: {e:#}");
            if e.downcast_ref::<Usage>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
