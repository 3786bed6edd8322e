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
//!
//! Free heap between allocations that live on is not given back by glibc on its own (only
//! what is free at the top of the heap is, beyond the trim threshold): [`trim_when_quiet`]
//! calls `malloc_trim` once the server has been quiet for a moment after connections came and
//! went.

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

/// Connections started and ended so far: the allocator's view of how busy the server is.
static ACTIVITY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Records that a connection started or ended.
pub fn activity() {
    ACTIVITY.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// How often [`trim_when_quiet`] looks at [`ACTIVITY`].
const TICK: std::time::Duration = std::time::Duration::from_secs(1);
/// Ticks without a connection starting or ending (or in its handshake) before free heap is
/// given back.
const QUIET_TICKS: u32 = 2;

/// When to give free heap back to the system: once the server has been quiet (no connection
/// started or ended, none in its handshake) for [`QUIET_TICKS`] ticks after some activity, and
/// once per such pause.
/// The heap that a burst of handshakes, API calls and sessions freed stays mapped otherwise:
/// glibc gives back only what is free at the top of the heap, not the free pages between the
/// allocations that live on (docs/gitlab-sshd.md, "Memory").
#[derive(Debug, Default)]
pub struct Trimmer {
    seen: u64,
    quiet: u32,
    pending: bool,
}

impl Trimmer {
    /// One tick with the activity count so far; true when it is time to trim.
    /// `handshaking`: connections are in their handshake or login (a burst is going on, and
    /// trimming would only slow it down).
    pub fn tick(&mut self, activity: u64, handshaking: bool) -> bool {
        if activity != self.seen || handshaking {
            self.seen = activity;
            self.quiet = 0;
            self.pending = true;
            return false;
        }
        if !self.pending {
            return false;
        }
        self.quiet += 1;
        if self.quiet < QUIET_TICKS {
            return false;
        }
        self.pending = false;
        true
    }
}

/// Gives free heap back to the system whenever the server has become quiet ([`Trimmer`]);
/// runs for the life of the runtime.
pub async fn trim_when_quiet() {
    let mut trimmer = Trimmer::default();
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let handshaking = crate::metrics::METRICS
            .unauthenticated_connections
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0;
        if trimmer.tick(
            ACTIVITY.load(std::sync::atomic::Ordering::Relaxed),
            handshaking,
        ) {
            trim();
        }
    }
}

/// `malloc_trim(0)`: free pages anywhere in the heap go back to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    #[expect(
        unsafe_code,
        reason = "malloc_trim(3) takes an integer and only releases memory that is free; no \
                  safe wrapper exists in a maintained crate"
    )]
    // SAFETY: malloc_trim releases free memory only; any thread may call it at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other C libraries: nothing to do.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_after_a_quiet_pause_that_follows_activity() {
        let mut t = Trimmer::default();
        // Nothing happened yet: never.
        assert!(!t.tick(0, false));
        assert!(!t.tick(0, false));
        assert!(!t.tick(0, false));
        // A burst of connections: not while it goes on.
        assert!(!t.tick(10, false));
        assert!(!t.tick(50, false));
        // Quiet: after QUIET_TICKS ticks, once.
        assert!(!t.tick(50, false));
        assert!(t.tick(50, false));
        assert!(!t.tick(50, false));
        assert!(!t.tick(50, false));
        // The next burst and pause: once more.
        assert!(!t.tick(51, false));
        assert!(!t.tick(51, false));
        assert!(t.tick(51, false));
        assert!(!t.tick(51, false));
    }

    #[test]
    fn activity_during_the_pause_restarts_it() {
        let mut t = Trimmer::default();
        assert!(!t.tick(1, false));
        assert!(!t.tick(1, false));
        assert!(!t.tick(2, false));
        assert!(!t.tick(2, false));
        assert!(t.tick(2, false));
    }

    #[test]
    fn never_while_handshakes_are_in_flight() {
        let mut t = Trimmer::default();
        assert!(!t.tick(1000, true));
        // Slow handshakes: no connection starts or ends for a while, still no trim.
        for _ in 0..5 {
            assert!(!t.tick(1000, true));
        }
        // Every connection logged in (or gone): the quiet pause starts.
        assert!(!t.tick(1000, false));
        assert!(t.tick(1000, false));
    }
}
