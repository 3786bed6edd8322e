//! glibc malloc settings for gitlab-sshd (docs/gitlab-sshd.md, "Memory").
//!
//! Each session runs the shared command code on threads of its own (the blocking command
//! thread, the Gitaly call's runtime thread, its stdin reader, the internal-API client's
//! thread). glibc gives threads their own malloc arenas (up to 8 per core), and memory freed
//! into one arena is not reused by another, so 64 concurrent clones peaked at ~89 MB and left
//! ~46 MB behind. One arena, large buffers (yamux windows, pack chunks) straight from `mmap`
//! (returned to the system when freed) and a fixed trim threshold measured 56 MB peak and
//! 30 MB left behind (the same settings through `GLIBC_TUNABLES`, `BENCH_QUICK=1 make bench`,
//! 2026-12-02). jemalloc and mimalloc (tried through `LD_PRELOAD`) did worse on both (121 and
//! 132 MB peak).

/// Arenas: one for every thread (small allocations still come from each thread's cache).
const ARENA_MAX: i32 = 1;
/// Allocations from this size on get their own mapping, unmapped on free.
const MMAP_THRESHOLD: i32 = 64 * 1024;
/// Free memory at the top of the heap beyond this is given back at once.
const TRIM_THRESHOLD: i32 = 128 * 1024;

/// Applies the settings; call once at start-up, before any thread is started.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune() {
    #[expect(
        unsafe_code,
        reason = "mallopt(3) takes two integers and touches no memory of ours; no safe wrapper \
                  exists in a maintained crate"
    )]
    // SAFETY: mallopt only changes allocator parameters; it is called before other threads
    // exist and with parameters glibc documents.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Other platforms and C libraries keep their allocator's defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune() {}
