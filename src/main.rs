//! The `retentiond` binary: parse the command line, run it, exit with its code.

use std::process::ExitCode;

use clap::Parser;
use retentiond::cli::{Cli, run};

/// mimalloc instead of glibc malloc: ingest and purge allocate per row and per event, and glibc's
/// malloc/free were a large part of ingest's cycles (BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // clap exits 2 for usage errors and 0 for --help/--version.
            let code = e.exit_code();
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    let json = cli.json;
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            // A `--json` consumer always gets one JSON object, the error's own or {"error": …}.
            if json {
                match &f.json {
                    Some(j) => println!("{j}"),
                    None => println!("{}", retentiond::cli::error_json(&f.message)),
                }
            }
            eprintln!("error: {}", f.message);
            for d in &f.details {
                eprintln!("  {d}");
            }
            ExitCode::from(f.code)
        }
    }
}
