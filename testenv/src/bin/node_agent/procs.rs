//! Process groups of running containers, and finding the ones an earlier agent left behind.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

/// Environment variable set in every container process, naming the agent's state directory.
/// Children inherit it, so `/proc/<pid>/environ` tells which processes belong to which agent
/// even after the agent itself is gone (`reap_leftovers`, and `hack/testenv/down.sh`).
pub const MARKER_ENV: &str = "WEIR_TESTENV_AGENT_STATE";

/// Process-group ids of all containers currently running, so that a shutting-down agent can
/// kill them all.
#[derive(Default)]
pub struct ProcTable {
    groups: Mutex<HashSet<i32>>,
}

impl ProcTable {
    pub fn insert(&self, pgid: i32) {
        self.groups.lock().unwrap().insert(pgid);
    }

    pub fn remove(&self, pgid: i32) {
        self.groups.lock().unwrap().remove(&pgid);
    }

    pub fn kill_all(&self, sig: i32) -> usize {
        let groups = self.groups.lock().unwrap();
        for &g in groups.iter() {
            kill_group(g, sig);
        }
        groups.len()
    }
}

/// Signals a whole process group: a container's `sh -c 'sleep 60'` has the shell and `sleep`
/// in one group (each container is started with `process_group(0)`), and both must go.
pub fn kill_group(pgid: i32, sig: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) has no memory-safety preconditions; ESRCH (already gone) is fine.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// Kills every process whose environment carries this agent's marker (see [`MARKER_ENV`]).
/// Returns how many processes were signalled.
pub fn reap_leftovers(state_dir: &Path) -> usize {
    let needle = format!("{MARKER_ENV}={}", state_dir.display());
    let me = std::process::id() as i32;
    let mut n = 0;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ.split(|&b| b == 0).any(|kv| kv == needle.as_bytes()) {
            // SAFETY: see kill_group.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            n += 1;
        }
    }
    n
}
