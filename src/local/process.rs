//! One attempt of a task as a local process: started in its own process group (so that
//! stopping it reaches every process it started), its output in a log file, stopped with
//! SIGTERM and then SIGKILL after a grace period, like a pod.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::sync::mpsc;

/// What is needed to start an attempt.
#[derive(Clone, Debug)]
pub struct Launch {
    pub program: String,
    pub args: Vec<String>,
    /// Added to the environment `weir run` was started with.
    pub env: Vec<(String, String)>,
    pub working_dir: Option<PathBuf>,
    /// Receives stdout and stderr.
    pub log: PathBuf,
    /// The attempt fails with `DeadlineExceeded` when it runs longer.
    pub timeout: Option<Duration>,
    /// How long a process may take to exit after SIGTERM before it is killed.
    pub grace: Duration,
}

/// Asks a running attempt to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// SIGTERM, then SIGKILL after the grace period (a pod being deleted).
    Stop,
    /// SIGKILL now.
    Kill,
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The process exited by itself: with a code, or killed by a signal.
    Exited { code: Option<i32>, signal: Option<i32> },
    /// It ran past its timeout and was stopped.
    TimedOut,
    /// It was stopped on request.
    Stopped,
    /// It could not be started.
    NotStarted(String),
}

/// A wait task's attempt (`delay`, `time`): no process, it ends well after `wait_for`,
/// unless its timeout comes first or it is stopped.
pub async fn wait(
    wait_for: Duration,
    timeout: Option<Duration>,
    mut control: mpsc::UnboundedReceiver<Control>,
) -> Ended {
    if timeout.is_some_and(|t| t < wait_for) {
        tokio::select! {
            () = tokio::time::sleep(timeout.unwrap_or_default()) => Ended::TimedOut,
            _ = control.recv() => Ended::Stopped,
        }
    } else {
        tokio::select! {
            () = tokio::time::sleep(wait_for) => Ended::Exited { code: Some(0), signal: None },
            _ = control.recv() => Ended::Stopped,
        }
    }
}

fn signal_group(pgid: i32, signal: i32) {
    // SAFETY: killpg has no memory effects; a group that no longer exists gives ESRCH,
    // which is what "already gone" means here.
    unsafe {
        libc::killpg(pgid, signal);
    }
}

/// Runs one attempt to its end. `control` may ask it to stop early; when the sender is
/// dropped the attempt is killed.
pub async fn run(launch: Launch, mut control: mpsc::UnboundedReceiver<Control>) -> Ended {
    let log = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&launch.log)
    {
        Ok(f) => f,
        Err(e) => return Ended::NotStarted(format!("cannot open log {}: {e}", launch.log.display())),
    };
    let stderr = match log.try_clone() {
        Ok(f) => f,
        Err(e) => return Ended::NotStarted(format!("cannot open log {}: {e}", launch.log.display())),
    };
    let mut command = tokio::process::Command::new(&launch.program);
    command
        .args(&launch.args)
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(stderr))
        // Its own group: Ctrl-C at the terminal reaches `weir` only, which then stops
        // tasks in order, and a stop reaches the task's children too.
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &launch.working_dir {
        command.current_dir(dir);
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let message = format!("cannot start {:?}: {e}", launch.program);
            let _ = std::fs::write(&launch.log, format!("weir: {message}\n"));
            return Ended::NotStarted(message);
        }
    };
    let Some(pgid) = child.id().map(|id| id as i32) else {
        return Ended::NotStarted("the process exited before it could be watched".into());
    };
    let deadline = async {
        match launch.timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let ended = tokio::select! {
        status = child.wait() => match status {
            Ok(status) => {
                use std::os::unix::process::ExitStatusExt;
                Ended::Exited { code: status.code(), signal: status.signal() }
            }
            Err(e) => Ended::NotStarted(format!("cannot wait for the process: {e}")),
        },
        () = deadline => {
            terminate(&mut child, pgid, launch.grace, &mut control).await;
            Ended::TimedOut
        }
        request = control.recv() => {
            match request {
                Some(Control::Stop) => terminate(&mut child, pgid, launch.grace, &mut control).await,
                Some(Control::Kill) | None => kill(&mut child, pgid).await,
            }
            Ended::Stopped
        }
    };
    // Like a container's end: whatever the task left running in its group goes with it.
    signal_group(pgid, libc::SIGKILL);
    ended
}

/// SIGTERM to the group; SIGKILL when the grace period is over or a kill is asked for.
async fn terminate(
    child: &mut tokio::process::Child,
    pgid: i32,
    grace: Duration,
    control: &mut mpsc::UnboundedReceiver<Control>,
) {
    signal_group(pgid, libc::SIGTERM);
    let kill_asked = async {
        loop {
            match control.recv().await {
                Some(Control::Stop) => continue,
                Some(Control::Kill) | None => return,
            }
        }
    };
    tokio::select! {
        _ = child.wait() => {}
        () = tokio::time::sleep(grace) => kill(child, pgid).await,
        () = kill_asked => kill(child, pgid).await,
    }
}

async fn kill(child: &mut tokio::process::Child, pgid: i32) {
    signal_group(pgid, libc::SIGKILL);
    let _ = child.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(script: &str, dir: &std::path::Path) -> Launch {
        Launch {
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![("GREETING".into(), "hello".into())],
            working_dir: None,
            log: dir.join("task.log"),
            timeout: None,
            grace: Duration::from_secs(5),
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weir-process-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn exit_codes_and_output_are_kept() {
        let dir = temp_dir("exit");
        let (_tx, rx) = mpsc::unbounded_channel();
        let ended = run(launch("echo $GREETING; echo oops >&2; exit 3", &dir), rx).await;
        assert_eq!(
            ended,
            Ended::Exited {
                code: Some(3),
                signal: None
            }
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("task.log")).unwrap(),
            "hello\noops\n"
        );
    }

    #[tokio::test]
    async fn a_timeout_stops_the_whole_group() {
        let dir = temp_dir("timeout");
        let (_tx, rx) = mpsc::unbounded_channel();
        let mut l = launch("sleep 30 & echo $! > child.pid; wait", &dir);
        l.working_dir = Some(dir.clone());
        l.timeout = Some(Duration::from_millis(300));
        assert_eq!(run(l, rx).await, Ended::TimedOut);
        let pid = std::fs::read_to_string(dir.join("child.pid")).unwrap();
        let pid = pid.trim();
        // A killed process lingers in /proc until the kernel has torn it down and it is
        // reaped: poll (bounded) instead of looking once.
        let gone = || {
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
        };
        for _ in 0..100 {
            if gone() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(gone(), "the background child {pid} survived");
    }

    #[tokio::test]
    async fn a_process_ignoring_sigterm_is_killed_after_the_grace_period() {
        let dir = temp_dir("grace");
        let (tx, rx) = mpsc::unbounded_channel();
        let mut l = launch("trap '' TERM; sleep 30", &dir);
        l.grace = Duration::from_millis(200);
        let handle = tokio::spawn(run(l, rx));
        tokio::time::sleep(Duration::from_millis(200)).await;
        tx.send(Control::Stop).unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ended, Ended::Stopped);
    }

    #[tokio::test]
    async fn a_missing_program_is_not_started() {
        let dir = temp_dir("missing");
        let (_tx, rx) = mpsc::unbounded_channel();
        let mut l = launch("", &dir);
        l.program = "weir-no-such-program".into();
        assert!(matches!(run(l, rx).await, Ended::NotStarted(m) if m.contains("weir-no-such-program")));
    }
}
