//! SIGINT, SIGTERM and SIGHUP for the commands that stage data (`load`,
//! `save`, `copy`, `pull`, `push`, `import`): the signals are blocked in
//! every thread and taken by one `sigwait` thread, which asks the work to
//! stop ([`berth_copy::staging::cancel`]: extraction, hashing and copy
//! loops notice at their next chunk), so the command unwinds and its
//! staging directories and temporary files are removed as usual. If it has
//! not exited after [`GRACE`] (or on a second signal), the thread removes
//! every registered staging path itself and exits. Either way the exit code
//! is 128 + the signal (130 for SIGINT, 143 for SIGTERM), as a shell
//! reports a process killed by it.
//!
//! Nothing half-stored survives: blobs only become visible when complete
//! (berth-store's invariant), and the image is tagged last; a store
//! writer cut off by the grace period leaves its locked scratch file in
//! `<root>/ingest/tmp/`, which the next opening of the root removes.
//! Signals the command was started with ignored (`nohup`, background jobs
//! of a shell) stay ignored.

use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// How long a command has to unwind after a signal.
pub const GRACE: Duration = Duration::from_secs(3);

static SIGNAL: AtomicI32 = AtomicI32::new(0);

const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// The signals to take over: all of [`SIGNALS`] but those the command
/// was started with ignored (`nohup` ignores SIGHUP, a shell ignores
/// SIGINT for background jobs): those stay ignored, as they were meant to.
fn signal_set() -> libc::sigset_t {
    // SAFETY: sigset_t and sigaction are plain data, initialised by
    // sigemptyset and filled by sigaction (which only reads the
    // disposition here).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in SIGNALS {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(s, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction == libc::SIG_IGN
            {
                continue;
            }
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Takes over the signals. Call before any other thread exists (threads
/// inherit the blocked mask; child processes get a clean one from
/// `std::process`).
pub fn install() {
    let set = signal_set();
    // SAFETY: reads a set initialised above.
    if SIGNALS
        .iter()
        .all(|&s| unsafe { libc::sigismember(&set, s) } != 1)
    {
        return; // all ignored: nothing to take over
    }
    // SAFETY: the mask of the calling thread.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let spawned = std::thread::Builder::new()
        .name("berth-signals".into())
        .spawn(move || {
            let first = wait(&set, None).unwrap_or(libc::SIGTERM);
            SIGNAL.store(first, Ordering::SeqCst);
            berth_copy::staging::cancel();
            // A second signal, or the grace period, ends it here.
            let _ = wait(&set, Some(GRACE));
            berth_copy::staging::remove_registered();
            eprintln!(
                "berth: interrupted by {}; temporary files removed",
                name(first)
            );
            // SAFETY: ends the process without unwinding other threads.
            unsafe { libc::_exit(128 + first) }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot watch for signals: {e}");
        // SAFETY: undo the mask so the signals keep their default effect.
        unsafe {
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
    }
}

/// Waits for one of the signals (at most `timeout`).
fn wait(set: &libc::sigset_t, timeout: Option<Duration>) -> Option<libc::c_int> {
    loop {
        let r = match timeout {
            None => {
                let mut sig = 0;
                // SAFETY: waits on a valid, blocked set.
                match unsafe { libc::sigwait(set, &mut sig) } {
                    0 => sig,
                    _ => -1,
                }
            }
            Some(t) => {
                let ts = libc::timespec {
                    tv_sec: t.as_secs() as libc::time_t,
                    tv_nsec: t.subsec_nanos() as libc::c_long,
                };
                // SAFETY: as above, with a timeout.
                unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) }
            }
        };
        if r > 0 {
            return Some(r);
        }
        if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return None;
    }
}

fn name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// The signal that interrupted the command, if one did.
pub fn received() -> Option<libc::c_int> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}
