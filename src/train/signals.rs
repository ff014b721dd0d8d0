//! Stopping a run from outside: Ctrl-C (SIGINT) and SIGTERM, what Slurm, Kubernetes and
//! `timeout` send before they kill, both ask the training loop to write a checkpoint and
//! stop. The handler only records which signal came; the loop polls it between steps.
//!
//! The handlers reset to the default on delivery, so a second Ctrl-C ends the process at
//! once (checkpoints are written under a temporary name, so that loses nothing on disk), and
//! dropping [`StopSignals`] puts back what was there before, so a later stage of `alexnet
//! run` is not left ignoring Ctrl-C.
use std::sync::atomic::{AtomicI32, Ordering};

/// The signal received since [`StopSignals::install`], or 0.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// The signals that stop a run, installed for as long as this lives.
pub struct StopSignals {
    #[cfg(unix)]
    previous: Vec<(libc::c_int, libc::sigaction)>,
}

#[cfg(unix)]
extern "C" fn on_signal(sig: libc::c_int) {
    // An atomic store is async-signal-safe; everything else waits for the loop.
    RECEIVED.store(sig, Ordering::SeqCst);
}

impl StopSignals {
    /// Installs the handlers for SIGINT and SIGTERM and clears any signal seen before.
    pub fn install() -> StopSignals {
        RECEIVED.store(0, Ordering::SeqCst);
        #[cfg(unix)]
        {
            let mut previous = Vec::new();
            for sig in [libc::SIGINT, libc::SIGTERM] {
                // SAFETY: sigaction with a zeroed, then filled struct and a handler that
                // only stores to an atomic; the old action is kept to restore on drop.
                unsafe {
                    let mut act: libc::sigaction = std::mem::zeroed();
                    act.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                    // SA_RESTART: a read or wait in another thread resumes instead of failing
                    // with EINTR; SA_RESETHAND: the second signal has its default effect.
                    act.sa_flags = libc::SA_RESTART | libc::SA_RESETHAND;
                    libc::sigemptyset(&mut act.sa_mask);
                    let mut old: libc::sigaction = std::mem::zeroed();
                    if libc::sigaction(sig, &act, &mut old) == 0 {
                        previous.push((sig, old));
                    }
                }
            }
            StopSignals { previous }
        }
        #[cfg(not(unix))]
        StopSignals {}
    }

    /// The signal that asked the run to stop, if one came.
    pub fn received(&self) -> Option<i32> {
        match RECEIVED.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }
}

impl Drop for StopSignals {
    fn drop(&mut self) {
        #[cfg(unix)]
        for (sig, old) in &self.previous {
            // SAFETY: restores an action sigaction itself returned.
            unsafe {
                libc::sigaction(*sig, old, std::ptr::null_mut());
            }
        }
    }
}

/// The name of a stop signal for messages (`SIGINT (Ctrl-C)`, `SIGTERM`).
pub fn signal_name(sig: i32) -> String {
    #[cfg(unix)]
    {
        if sig == libc::SIGINT {
            return "SIGINT (Ctrl-C)".into();
        }
        if sig == libc::SIGTERM {
            return "SIGTERM".into();
        }
    }
    format!("signal {sig}")
}

/// The exit status a shell gives a process ended by `sig` (130 for Ctrl-C, 143 for
/// SIGTERM), so `alexnet train … && next` does not carry on after a stopped run.
pub fn exit_code(sig: i32) -> i32 {
    128 + sig
}
