//! `aside`: see `aside --help`. Everything lives in the library; this only dispatches.

use std::process::ExitCode;

/// mimalloc instead of glibc malloc: see Cargo.toml and DESIGN.md ("Performance").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match aside::cli::parse(&args) {
        Ok(cmd) => aside::cli::run(cmd).await,
        Err(e) => {
            eprintln!("aside: {e}");
            ExitCode::from(2)
        }
    }
}
