//! The network namespaces this process created, deleted when it is
//! interrupted. A [`NetNs`](super::netns::NetNs) deletes its namespace when
//! dropped, but Ctrl-C or `kill` ends a process without running a single
//! drop: `softrdma-perf --fabric tap` left its hub and link namespaces
//! behind, and an interrupted `scale_ns -n 256` would leave 257. A binary
//! that creates namespaces calls [`delete_on_signals`] first; then SIGINT,
//! SIGTERM and SIGHUP delete every namespace still owned and exit with
//! 128 + the signal's number, as the shell reports a death by that signal.
//! A second signal while the deletions run exits at once.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

static OWNED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Records a namespace this process created and must delete.
pub(crate) fn track(name: &str) {
    OWNED.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_owned());
}

/// The namespace is deleted (or handed over): nothing left to do for it.
pub(crate) fn untrack(name: &str) {
    OWNED.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
}

/// Deletes every namespace this process still owns, in one `ip -batch`;
/// returns how many it asked to delete.
pub fn delete_owned() -> usize {
    let names: Vec<String> =
        std::mem::take(&mut *OWNED.lock().unwrap_or_else(|e| e.into_inner())).into_iter().collect();
    if names.is_empty() {
        return 0;
    }
    let script: String = names.iter().map(|n| format!("netns delete {n}\n")).collect();
    // -force: one namespace that is already gone must not keep the others.
    let child = Command::new("ip").args(["-force", "-batch", "-"]).stdin(Stdio::piped()).stderr(Stdio::null()).spawn();
    if let Ok(mut c) = child {
        if let Some(mut stdin) = c.stdin.take() {
            let _ = stdin.write_all(script.as_bytes());
        }
        let _ = c.wait();
    }
    names.len()
}

/// Installs (once per process) the handler described in the module docs.
/// Errors only if the signals cannot be registered.
pub fn delete_on_signals() -> std::io::Result<()> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED.get_or_init(install).clone().map_err(std::io::Error::other)
}

fn install() -> Result<(), String> {
    let signals = [SIGINT, SIGTERM, SIGHUP];
    let busy = Arc::new(AtomicBool::new(false));
    for &sig in &signals {
        // Runs in the handler before the iterator sees the signal: exits
        // only when a first signal's deletions are already under way.
        signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, busy.clone())
            .map_err(|e| format!("registering signal {sig}: {e}"))?;
    }
    let mut it = signal_hook::iterator::Signals::new(signals).map_err(|e| format!("registering signals: {e}"))?;
    std::thread::Builder::new()
        .name("netns-reaper".into())
        .spawn(move || {
            if let Some(sig) = it.forever().next() {
                busy.store(true, Ordering::SeqCst);
                let n = delete_owned();
                if n > 0 {
                    eprintln!("softrdma: interrupted by signal {sig}; deleted {n} network namespace(s) it created");
                }
                std::process::exit(128 + sig);
            }
        })
        .map_err(|e| format!("starting the signal thread: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned() -> Vec<String> {
        OWNED.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }

    #[test]
    fn tracks_what_it_is_told() {
        track("reaper-test-a");
        track("reaper-test-b");
        untrack("reaper-test-a");
        let now = owned();
        assert!(now.contains(&"reaper-test-b".to_string()) && !now.contains(&"reaper-test-a".to_string()));
        untrack("reaper-test-b");
        assert!(!owned().contains(&"reaper-test-b".to_string()));
    }
}
