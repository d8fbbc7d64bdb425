//! Entry point: parse the command line, run, and turn any error into one line and exit code 1.
use clap::Parser;
use tracer::cli::Cli;

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tracer: error: cannot start the async runtime: {error}");
            std::process::exit(1);
        }
    };
    if let Err(error) = runtime.block_on(tracer::run::run(cli)) {
        eprintln!("tracer: error: {error:#}");
        std::process::exit(1);
    }
}
