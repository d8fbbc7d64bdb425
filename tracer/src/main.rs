//! Entry point: parse the command line, run, and turn any error into one line and exit code 1
//! (2 for a bad command line).
// The dependencies serve the library; the binary only parses the command line and runs it.
#![allow(unused_crate_dependencies)]

use clap::{
    error::{ContextKind, ContextValue, ErrorKind},
    Parser,
};
use tracer::app::cli::Cli;

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if matches!(error.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => error.exit(),
        Err(error) => {
            let text = error.to_string();
            let first = text.lines().next().unwrap_or_default().trim_start_matches("error: ");
            // The values a flag takes, on the same line.
            let choices = match error.get(ContextKind::ValidValue) {
                Some(ContextValue::Strings(values)) if !values.is_empty() => format!("; one of: {}", values.join(", ")),
                _ => String::new(),
            };
            eprintln!("tracer: error: {first}{choices} (see `tracer --help`)");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tracer: error: cannot start the async runtime: {error}");
            std::process::exit(1);
        }
    };
    if let Err(error) = runtime.block_on(tracer::app::run(cli)) {
        eprintln!("tracer: error: {error:#}");
        std::process::exit(1);
    }
}
