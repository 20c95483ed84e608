//! `sluice`: run MapReduce jobs embedded on this machine, or run and use a cluster.

use std::process::ExitCode;

// mimalloc: the map side allocates and frees many small keys; glibc malloc spent ~6% of a
// word count in consolidation.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h (v2 and v3 enums alike).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tunes the allocator for task memory: huge pages (THP is opt-in here) cut the TLB misses of
/// combiner hash tables, and keeping freed memory for ten seconds saves the next task from
/// faulting in and zeroing fresh pages. Measured in BENCHMARKS.md.
fn tune_allocator() {
    #[allow(unsafe_code)]
    // SAFETY: mi_option_set only stores an integer option; mimalloc reads options atomically.
    unsafe {
        libmimalloc_sys::mi_option_set(libmimalloc_sys::mi_option_large_os_pages, 1);
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10_000);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    sluice_cli::sluice_main()
}
