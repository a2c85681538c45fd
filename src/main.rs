//! `aside`: see `aside --help`. Everything lives in the library; this only dispatches.

use std::process::ExitCode;

/// mimalloc instead of glibc malloc: see Cargo.toml and DESIGN.md ("Performance").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_t` (the Rust bindings name no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory goes back to the OS after 100 ms instead of mimalloc's 1 s: with 1 s, a burst of list
/// pages at 64 connections held the peak RSS at 43.6 MB (target 40); with 100 ms, 34.7–37.5 MB and no
/// measurable CPU cost (A/B in one run, docs/benchmarks.md notes).
/// An operator's own `MIMALLOC_PURGE_DELAY` wins.
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain integer option; mimalloc reads it at each purge decision.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 100) };
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tune_allocator();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match aside::cli::parse(&args) {
        Ok(cmd) => aside::cli::run(cmd).await,
        Err(e) => {
            eprintln!("aside: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    /// The option index is right: purge delay's default is 1000 (ms) in mimalloc 3, and its neighbours'
    /// (eager commit delay, NUMA nodes) are 1 and 0. Then setting it takes.
    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // SAFETY: reads and sets plain integer options.
        unsafe {
            if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
                return;
            }
            assert_eq!(libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY), 1000);
            super::tune_allocator();
            assert_eq!(libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY), 100);
        }
    }
}
