//! `weir run` end to end: the built binary runs the examples and small pipelines on this
//! machine. What ran, in which order and how often is read from the tasks' own side effects:
//! `sh` and `python3` are wrapped (first on PATH) by a script that appends
//! `start <task> <attempt> <time>` and `end <task> <attempt> <time> <exit code>` to a file,
//! so the checks never rely on Weir's own report.

#[path = "common/manifests.rs"]
mod manifests;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A program's path on PATH.
fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// A directory of its own for each test, with the wrappers and the record of events.
struct Sandbox {
    dir: PathBuf,
    events: PathBuf,
    path: String,
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Start,
    End(i32),
}

#[derive(Clone, Debug)]
struct Event {
    kind: Kind,
    task: String,
    attempt: u32,
    at: f64,
}

impl Sandbox {
    fn new(name: &str) -> Sandbox {
        let dir = std::env::temp_dir().join(format!("weir-local-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let events = dir.join("events");
        for program in ["sh", "python3"] {
            let Some(real) = which(program) else { continue };
            let script = format!(
                "#!/bin/sh\n\
                 printf 'start %s %s %s\\n' \"$WEIR_TASK\" \"$WEIR_ATTEMPT\" \"$(date +%s.%N)\" >> \"$WEIR_TEST_EVENTS\"\n\
                 trap : TERM INT\n\
                 {real} \"$@\"\n\
                 code=$?\n\
                 printf 'end %s %s %s %s\\n' \"$WEIR_TASK\" \"$WEIR_ATTEMPT\" \"$(date +%s.%N)\" $code >> \"$WEIR_TEST_EVENTS\"\n\
                 exit $code\n",
                real = real.display()
            );
            let wrapper = bin.join(program);
            std::fs::write(&wrapper, script).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        Sandbox { dir, events, path }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
        command
            .arg("run")
            .args(args)
            .current_dir(&self.dir)
            .env("PATH", &self.path)
            .env("WEIR_TEST_EVENTS", &self.events)
            .env_remove("NO_COLOR");
        // What the test runner was started with (say WEIR_KUBECONFIG from hack/test.sh)
        // must not reach the tasks: tests check the exact WEIR_* variables they see.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("WEIR_") && name != "WEIR_TEST_EVENTS" {
                command.env_remove(name);
            }
        }
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running weir run")
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn events(&self) -> Vec<Event> {
        let text = std::fs::read_to_string(&self.events).unwrap_or_default();
        text.lines()
            .map(|line| {
                let f: Vec<&str> = line.split(' ').collect();
                Event {
                    kind: if f[0] == "start" {
                        Kind::Start
                    } else {
                        Kind::End(f[4].parse().unwrap())
                    },
                    task: f[1].to_string(),
                    attempt: f[2].parse().unwrap(),
                    at: f[3].parse().unwrap(),
                }
            })
            .collect()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The example's pipeline: its tasks, each with its upstream tasks, and which are `finally`.
fn dag(file: &Path) -> (BTreeMap<String, Vec<String>>, BTreeSet<String>) {
    let report = weir::manifest::check_file(file, &weir::manifest::Schemas::new());
    let selected = report.select(None).unwrap();
    let deps = selected
        .spec
        .tasks
        .iter()
        .chain(&selected.spec.finally)
        .map(|t| (t.name.clone(), t.depends_on.clone()))
        .collect();
    let finally = selected.spec.finally.iter().map(|t| t.name.clone()).collect();
    (deps, finally)
}

/// Checks, from the events, that each task started only after every attempt of each of its
/// upstream tasks had ended, and `finally` tasks after every other task.
fn assert_dag_order(events: &[Event], deps: &BTreeMap<String, Vec<String>>, finally: &BTreeSet<String>) {
    // Positions in the record of the starts (or ends) of a task's attempts.
    let at = |task: &str, start: bool| -> Vec<usize> {
        events
            .iter()
            .enumerate()
            .filter(|(_, e)| e.task == task && (e.kind == Kind::Start) == start)
            .map(|(i, _)| i)
            .collect()
    };
    for (task, upstream) in deps {
        let must_follow: Vec<&String> = if finally.contains(task) {
            deps.keys()
                .filter(|t| !finally.contains(*t))
                .chain(upstream)
                .collect()
        } else {
            upstream.iter().collect()
        };
        for start in at(task, true) {
            for up in &must_follow {
                for end in at(up, false) {
                    assert!(end < start, "{task} started before {up} ended: {events:#?}");
                }
                assert!(
                    !at(up, true).is_empty() || finally.contains(task),
                    "{task} ran but its upstream task {up} never did"
                );
            }
        }
    }
}

fn started(events: &[Event]) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| e.kind == Kind::Start)
        .map(|e| e.task.clone())
        .collect()
}

#[test]
fn the_examples_run_in_dependency_order() {
    if which("python3").is_none() {
        eprintln!("skipped: python3 is not installed (the examples call it)");
        return;
    }
    // Tasks each example is expected not to run, given their trigger rules and conditions.
    let not_run: BTreeMap<&str, &[&str]> = BTreeMap::from([("data-quality", &["alert"][..])]);
    let mut names: Vec<PathBuf> = std::fs::read_dir(repo().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    names.sort();
    for file in names {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        let sandbox = Sandbox::new(&format!("example-{name}"));
        let out = sandbox.run(&[file.to_str().unwrap(), "--name", "local-test"]);
        assert!(out.status.success(), "{name}: {}", text(&out));
        let events = sandbox.events();
        let (deps, finally) = dag(&file);
        assert_dag_order(&events, &deps, &finally);
        let skipped: BTreeSet<String> = not_run
            .get(name.as_str())
            .map(|s| s.iter().map(|t| t.to_string()).collect())
            .unwrap_or_default();
        let expected: BTreeSet<String> = deps.keys().filter(|t| !skipped.contains(*t)).cloned().collect();
        assert_eq!(started(&events), expected, "{name}: {events:#?}");
        for e in &events {
            if let Kind::End(code) = e.kind {
                assert!(code == 0 || name == "flaky-task", "{name}: {e:?}");
            }
        }
        // Every attempt has its log.
        assert!(
            sandbox.dir.join(".weir-run/local-test/run.json").is_file(),
            "{name}"
        );
    }
}

#[test]
fn the_diamond_runs_its_branches_at_the_same_time() {
    let sandbox = Sandbox::new("diamond");
    let file = sandbox.write(
        "diamond.yaml",
        &std::fs::read_to_string(repo().join("examples/diamond.yaml"))
            .unwrap()
            .replace("'echo left'", "'sleep 1; echo left'")
            .replace("'echo right'", "'sleep 1; echo right'"),
    );
    let out = sandbox.run(&[file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let order: Vec<String> = sandbox
        .events()
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                if e.kind == Kind::Start { "start" } else { "end" },
                e.task
            )
        })
        .collect();
    assert_eq!(&order[..2], ["start:start", "end:start"]);
    // Both branches start before either ends.
    let mut middle = order[2..4].to_vec();
    middle.sort();
    assert_eq!(middle, ["start:left", "start:right"], "{order:?}");
    assert_eq!(&order[6..], ["start:join", "end:join"]);
}

fn three_sleepers(parallelism: Option<u32>) -> String {
    let limit = parallelism.map_or(String::new(), |p| format!("  parallelism: {p}\n"));
    format!(
        "apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata:
  name: sleepers
spec:
{limit}  defaults:
    image: busybox
  tasks:
    - name: a
      command: [sh, -c, 'sleep 1']
    - name: b
      command: [sh, -c, 'sleep 1']
    - name: c
      command: [sh, -c, 'sleep 1']
"
    )
}

/// Most tasks running at once, from the events.
fn most_at_once(events: &[Event]) -> usize {
    let mut running: usize = 0;
    let mut most = 0;
    for e in events {
        match e.kind {
            Kind::Start => running += 1,
            Kind::End(_) => running -= 1,
        }
        most = most.max(running);
    }
    most
}

#[test]
fn parallelism_limits_how_many_tasks_run_at_once() {
    let sandbox = Sandbox::new("parallel");
    let file = sandbox.write("p.yaml", &three_sleepers(None));
    let out = sandbox.run(&[file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(most_at_once(&sandbox.events()), 3);

    let sandbox = Sandbox::new("parallelism-1");
    let file = sandbox.write("p.yaml", &three_sleepers(Some(1)));
    let out = sandbox.run(&[file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let events = sandbox.events();
    assert_eq!(most_at_once(&events), 1, "{events:#?}");
    assert_eq!(started(&events).len(), 3);
}

fn pooled(slots: u32, second_pool: &str) -> String {
    format!(
        "apiVersion: weir.dev/v1alpha1
kind: Pool
metadata: {{name: api}}
spec: {{slots: {slots}}}
---
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata:
  name: callers
spec:
  defaults:
    image: busybox
    pool: api
    weightRule: Absolute
  tasks:
    - {{name: low, priorityWeight: 1, command: [sh, -c, 'sleep 0.3']}}
    - {{name: high, priorityWeight: 9, command: [sh, -c, 'sleep 0.3']}}
    - {{name: middle, priorityWeight: 5, pool: {second_pool}, command: [sh, -c, 'sleep 0.3']}}
    - {{name: free, command: [sh, -c, 'sleep 0.3'], pool: other}}
---
apiVersion: weir.dev/v1alpha1
kind: Pool
metadata: {{name: other}}
spec: {{slots: 5}}
"
    )
}

/// `weir run` takes the Pools of its file as the operator takes those of a namespace: one
/// slot lets one task of the pool run at a time, highest priority first; a task of another
/// pool runs beside them.
#[test]
fn pools_limit_local_runs_and_start_tasks_by_priority() {
    let sandbox = Sandbox::new("pools");
    let file = sandbox.write("p.yaml", &pooled(1, "api"));
    let out = sandbox.run(&[file.to_str().unwrap()]);
    let output = text(&out);
    assert!(out.status.success(), "{output}");
    let events = sandbox.events();
    let in_api: Vec<Event> = events.iter().filter(|e| e.task != "free").cloned().collect();
    assert_eq!(most_at_once(&in_api), 1, "{events:#?}");
    let order: Vec<&str> = in_api
        .iter()
        .filter(|e| e.kind == Kind::Start)
        .map(|e| e.task.as_str())
        .collect();
    assert_eq!(order, ["high", "middle", "low"], "{events:#?}");
    assert_eq!(
        most_at_once(&events),
        2,
        "the task of the other pool ran beside them"
    );
    assert!(
        output.contains("low: waiting for 1 slot(s) of pool \"api\""),
        "{output}"
    );
}

/// A pool the file does not define, or one too small for a task, could never be fixed
/// while `weir run` runs: the run does not start, and says why.
#[test]
fn a_missing_or_too_small_pool_keeps_a_local_run_from_starting() {
    let sandbox = Sandbox::new("pools-missing");
    let file = sandbox.write("p.yaml", &pooled(1, "nowhere"));
    let out = sandbox.run(&[file.to_str().unwrap()]);
    let output = text(&out);
    assert_eq!(out.status.code(), Some(2), "{output}");
    assert!(
        output.contains("task \"middle\" uses pool \"nowhere\", which the file does not define"),
        "{output}"
    );
    let file = sandbox.write(
        "p.yaml",
        &pooled(1, "api").replace("priorityWeight: 9,", "priorityWeight: 9, poolSlots: 2,"),
    );
    let out = sandbox.run(&[file.to_str().unwrap()]);
    let output = text(&out);
    assert_eq!(out.status.code(), Some(2), "{output}");
    assert!(
        output.contains("task \"high\" takes 2 slot(s) of pool \"api\" (poolSlots), which has only 1"),
        "{output}"
    );
    assert!(sandbox.events().is_empty());
}

#[test]
fn retries_wait_their_delay_with_backoff() {
    let sandbox = Sandbox::new("flaky");
    let file = repo().join("examples/flaky-task.yaml");
    let out = sandbox.run(&[file.to_str().unwrap()]);
    let output = text(&out);
    assert!(out.status.success(), "{output}");
    let events = sandbox.events();
    let seen: Vec<(Kind, u32)> = events.iter().map(|e| (e.kind.clone(), e.attempt)).collect();
    assert_eq!(
        seen,
        [
            (Kind::Start, 1),
            (Kind::End(75), 1),
            (Kind::Start, 2),
            (Kind::End(75), 2),
            (Kind::Start, 3),
            (Kind::End(0), 3)
        ]
    );
    // delay 1s, backoffFactor 2: 1s before the second attempt, 2s before the third.
    let first_wait = events[2].at - events[1].at;
    let second_wait = events[4].at - events[3].at;
    assert!((0.95..2.0).contains(&first_wait), "waited {first_wait}s");
    assert!((1.95..3.5).contains(&second_wait), "waited {second_wait}s");
    assert!(
        output.contains("fetch: attempt 1 failed (Error: exit code 75)"),
        "{output}"
    );
    let row = output.lines().find(|l| l.starts_with("fetch ")).unwrap();
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>()[..3],
        ["fetch", "Succeeded", "3"]
    );
}

#[test]
fn an_exit_code_excluded_from_retries_fails_at_once() {
    let sandbox = Sandbox::new("no-retry");
    let file = sandbox.write(
        "flaky.yaml",
        &std::fs::read_to_string(repo().join("examples/flaky-task.yaml"))
            .unwrap()
            .replace("exit 75", "exit 2"),
    );
    let out = sandbox.run(&[file.to_str().unwrap()]);
    let output = text(&out);
    assert_eq!(out.status.code(), Some(1), "{output}");
    let attempts: Vec<u32> = sandbox.events().iter().map(|e| e.attempt).collect();
    assert_eq!(attempts, [1, 1], "{output}");
    assert!(
        output.contains("fetch failed after 1 attempt(s): Error: exit code 2"),
        "{output}"
    );
}

#[test]
fn a_failing_run_exits_non_zero_with_its_summary() {
    if which("python3").is_none() {
        eprintln!("skipped: python3 is not installed (the example calls it)");
        return;
    }
    let sandbox = Sandbox::new("failing");
    let file = sandbox.write(
        "ml.yaml",
        &std::fs::read_to_string(repo().join("examples/ml-training.yaml"))
            .unwrap()
            .replace("value: \"0.90\"", "value: \"0.95\""),
    );
    let out = sandbox.run(&[file.to_str().unwrap(), "--name", "ml-failing"]);
    let output = text(&out);
    assert_eq!(out.status.code(), Some(1), "{output}");
    let events = sandbox.events();
    assert_eq!(
        started(&events),
        ["evaluate", "report", "train", "validate"]
            .map(String::from)
            .into()
    );
    let validate_end = events
        .iter()
        .position(|e| e.task == "validate" && e.kind == Kind::End(1));
    let report_start = events
        .iter()
        .position(|e| e.task == "report" && e.kind == Kind::Start);
    assert!(validate_end < report_start, "{events:#?}");
    // The failure, with the end of its log, then the summary table and the verdict.
    assert!(
        output.contains("validate failed after 1 attempt(s): Error: exit code 1"),
        "{output}"
    );
    assert!(
        output.contains("  | accuracy 0.93 is below 0.95: not deploying"),
        "{output}"
    );
    let summary: Vec<Vec<&str>> = output
        .lines()
        .skip_while(|l| !l.starts_with("TASK "))
        .take(6)
        .map(|l| l.split_whitespace().take(3).collect())
        .collect();
    assert_eq!(
        summary,
        [
            vec!["TASK", "STATE", "ATTEMPTS"],
            vec!["train", "Succeeded", "1"],
            vec!["evaluate", "Succeeded", "1"],
            vec!["validate", "Failed", "1"],
            vec!["deploy", "UpstreamFailed", "0"],
            vec!["report", "Succeeded", "1"],
        ]
    );
    assert!(
        output.contains("run ml-failing failed (TaskFailed: failed: validate)"),
        "{output}"
    );
    let log = sandbox.dir.join(".weir-run/ml-failing/validate.attempt-1.log");
    assert!(std::fs::read_to_string(log).unwrap().contains("below 0.95"));
}

#[test]
fn a_task_past_its_timeout_is_stopped_and_fails() {
    let sandbox = Sandbox::new("timeout");
    let file = sandbox.write(
        "t.yaml",
        "apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata:
  name: slow
spec:
  tasks:
    - name: slow
      image: busybox
      command: [sh, -c, 'sleep 300']
      timeout: 500ms
  finally:
    - name: after
      image: busybox
      command: [sh, -c, 'echo after']
",
    );
    let started_at = Instant::now();
    let out = sandbox.run(&[file.to_str().unwrap()]);
    let output = text(&out);
    // Not a speed check: the task sleeps 300 s, so finishing well before that shows the
    // timeout stopped it rather than waiting it out.
    assert!(started_at.elapsed() < Duration::from_secs(120), "{output}");
    assert_eq!(out.status.code(), Some(1), "{output}");
    assert!(
        output.contains(
            "slow failed after 1 attempt(s): DeadlineExceeded: ran longer than its timeout of 500ms"
        ),
        "{output}"
    );
    assert!(started(&sandbox.events()).contains("after"));
}

#[test]
fn the_run_timeout_stops_running_tasks_and_runs_finally() {
    let sandbox = Sandbox::new("run-timeout");
    let file = sandbox.write(
        "t.yaml",
        "apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata:
  name: slow-run
spec:
  timeout: 700ms
  defaults:
    image: busybox
  tasks:
    - name: slow
      command: [sh, -c, 'sleep 30']
    - name: never
      dependsOn: [slow]
      command: [sh, -c, 'echo never']
  finally:
    - name: cleanup
      command: [sh, -c, 'echo cleanup']
",
    );
    let out = sandbox.run(&[file.to_str().unwrap()]);
    let output = text(&out);
    assert_eq!(out.status.code(), Some(1), "{output}");
    assert!(
        output.contains("the run timed out after 700ms: stopping 1 running task(s)"),
        "{output}"
    );
    assert!(output.contains("failed (RunTimeout:"), "{output}");
    assert_eq!(
        started(&sandbox.events()),
        ["cleanup", "slow"].map(String::from).into()
    );
}

/// Processes whose command line holds `marker`, other than zombies.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let zombie = std::fs::read_to_string(entry.path().join("stat")).is_ok_and(|s| s.contains(") Z "));
        if cmdline.contains(marker) && !zombie {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn interrupt(pid: u32) {
    let status = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn sleeper_pipeline(marker: &str, trap_term: bool) -> String {
    let trap = if trap_term { "trap \"\" TERM; " } else { "" };
    format!(
        "apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata:
  name: sleepers
spec:
  defaults:
    image: busybox
  tasks:
    - name: sleeper
      command: [sh, -c, '{trap}sleep {marker} & sleep {marker}; wait']
    - name: waiter
      dependsOn: [sleeper]
      command: [sh, -c, 'echo waiter']
  finally:
    - name: cleanup
      command: [sh, -c, 'echo cleaning up']
"
    )
}

/// A marker no other process has: a sleep of a length only this test uses.
fn marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{}.{nanos:09}", 700 + std::process::id() % 200)
}

#[test]
fn ctrl_c_cancels_the_run_stops_its_processes_and_runs_finally() {
    let sandbox = Sandbox::new("sigint");
    let marker = marker();
    let file = sandbox.write("s.yaml", &sleeper_pipeline(&marker, false));
    let mut child = sandbox
        .command(&[file.to_str().unwrap(), "--name", "interrupted"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the task to start", Duration::from_secs(10), || {
        processes_with(&marker).len() >= 3
    });
    interrupt(child.id());
    let started = Instant::now();
    let status = child.wait().unwrap();
    // Not a speed check: the task sleeps for many minutes, so ending well before shows
    // Ctrl-C stopped it.
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );
    let mut output = String::new();
    child.stdout.take().unwrap().read_to_string(&mut output).unwrap();
    assert_eq!(status.code(), Some(130), "{output}");
    // Nothing is left behind: not the task's shell, nor the sleeps it started.
    wait_for("the task's processes to be gone", Duration::from_secs(3), || {
        processes_with(&marker).is_empty()
    });
    let events = sandbox.events();
    assert_eq!(started_tasks(&events), ["cleanup", "sleeper"]);
    let sleeper_end = events
        .iter()
        .position(|e| e.task == "sleeper" && e.kind != Kind::Start);
    let cleanup_start = events
        .iter()
        .position(|e| e.task == "cleanup" && e.kind == Kind::Start);
    assert!(
        sleeper_end.is_some() && sleeper_end < cleanup_start,
        "{events:#?}"
    );
    assert!(output.contains("interrupted: cancelling the run"), "{output}");
    assert!(output.contains("run interrupted was cancelled"), "{output}");
    let row = |task: &str| {
        output
            .lines()
            .find(|l| l.starts_with(&format!("{task} ")))
            .map(|l| l.split_whitespace().nth(1).unwrap_or_default().to_string())
    };
    assert_eq!(row("sleeper").as_deref(), Some("Cancelled"));
    assert_eq!(row("waiter").as_deref(), Some("Cancelled"));
    assert_eq!(row("cleanup").as_deref(), Some("Succeeded"));
}

fn started_tasks(events: &[Event]) -> Vec<String> {
    started(events).into_iter().collect()
}

#[test]
fn a_second_ctrl_c_kills_a_task_that_ignores_sigterm() {
    let sandbox = Sandbox::new("sigint-twice");
    let marker = marker();
    let file = sandbox.write("s.yaml", &sleeper_pipeline(&marker, true));
    let mut child = sandbox
        .command(&[file.to_str().unwrap(), "--grace-period", "60s"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the task to start", Duration::from_secs(10), || {
        processes_with(&marker).len() >= 3
    });
    interrupt(child.id());
    std::thread::sleep(Duration::from_millis(500));
    // The shell ignores SIGTERM: the run waits for its grace period...
    assert!(child.try_wait().unwrap().is_none());
    interrupt(child.id());
    let started = Instant::now();
    let status = child.wait().unwrap();
    // ...until a second interrupt, which kills it at once: well before the 60 s grace
    // period would have ended (a bound far from both outcomes, not a speed check).
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(status.code(), Some(130));
    wait_for("the task's processes to be gone", Duration::from_secs(3), || {
        processes_with(&marker).is_empty()
    });
}

#[test]
fn tasks_see_the_variables_the_operator_sets() {
    let sandbox = Sandbox::new("env");
    let file = sandbox.write(
        "env.yaml",
        "apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata:
  name: env
spec:
  defaults:
    image: busybox
    env:
      - name: GREETING
        value: hello $(WEIR_TASK)
  tasks:
    - name: show
      command: [sh, -c, 'env | grep -E \"^(WEIR_|GREETING)\" | sort > vars.txt; echo \"$(GREETING) from args\" > args.txt']
",
    );
    let out = sandbox.run(&[file.to_str().unwrap(), "--name", "env-run"]);
    assert!(out.status.success(), "{}", text(&out));
    let vars = std::fs::read_to_string(sandbox.dir.join("vars.txt")).unwrap();
    let outputs = sandbox.dir.join(".weir-run/env-run/show.attempt-1.outputs");
    assert_eq!(
        vars,
        format!(
            "GREETING=hello show\nWEIR_ATTEMPT=1\nWEIR_OUTPUTS={}\nWEIR_PIPELINE_RUN=env-run\nWEIR_TASK=show\nWEIR_TASK_RUN=env-run-show\nWEIR_TEST_EVENTS={}\n",
            outputs.display(),
            sandbox.events.display()
        )
    );
    // `$(NAME)` in args is expanded the kubelet's way.
    assert_eq!(
        std::fs::read_to_string(sandbox.dir.join("args.txt")).unwrap(),
        "hello show from args\n"
    );
}

#[test]
fn value_from_variables_come_from_the_environment_or_the_run_does_not_start() {
    let sandbox = Sandbox::new("value-from");
    let file = sandbox.write(
        "secret.yaml",
        "apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata:
  name: secret
spec:
  tasks:
    - name: load
      image: busybox
      command: [sh, -c, 'echo \"$DB_PASSWORD\" > password.txt']
      env:
        - name: DB_PASSWORD
          valueFrom:
            secretKeyRef: {name: warehouse, key: password}
",
    );
    let out = sandbox
        .command(&[file.to_str().unwrap()])
        .env_remove("DB_PASSWORD")
        .output()
        .unwrap();
    let output = text(&out);
    assert_eq!(out.status.code(), Some(2), "{output}");
    assert!(
        output.contains("task \"load\": variable DB_PASSWORD comes from Secret warehouse key password"),
        "{output}"
    );
    assert!(sandbox.events().is_empty());
    let out = sandbox
        .command(&[file.to_str().unwrap()])
        .env("DB_PASSWORD", "s3cret")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(sandbox.dir.join("password.txt")).unwrap(),
        "s3cret\n"
    );
}

const PARAMS_AND_OUTPUTS: &str = "apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata:
  name: handoff
spec:
  params:
    - name: region
      default: eu
  defaults:
    image: busybox
  tasks:
    - name: count
      command: [sh, -c, 'echo \"rows=42\" > \"$WEIR_OUTPUTS\"']
      outputs:
        - name: rows
    - name: report
      dependsOn: [count]
      command: [sh, -c, 'echo \"{{ tasks.count.outputs.rows }} rows in {{ params.region }} ({{ run.name }})\" > report.txt']
";

#[test]
fn params_and_outputs_reach_the_tasks() {
    let sandbox = Sandbox::new("params");
    let file = sandbox.write("handoff.yaml", PARAMS_AND_OUTPUTS);
    let out = sandbox.run(&[
        file.to_str().unwrap(),
        "--param",
        "region=us",
        "--name",
        "handoff-1",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(sandbox.dir.join("report.txt")).unwrap(),
        "42 rows in us (handoff-1)\n"
    );
    let out = sandbox.run(&[file.to_str().unwrap(), "--param", "regoin=us"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("unknown parameter \"regoin\""),
        "{}",
        text(&out)
    );
}

#[test]
fn a_missing_declared_output_fails_the_task() {
    let sandbox = Sandbox::new("no-output");
    let file = sandbox.write(
        "handoff.yaml",
        &PARAMS_AND_OUTPUTS.replace("echo \"rows=42\" > \"$WEIR_OUTPUTS\"", "true"),
    );
    let out = sandbox.run(&[file.to_str().unwrap()]);
    let output = text(&out);
    assert_eq!(out.status.code(), Some(1), "{output}");
    assert!(
        output.contains("count failed after 1 attempt(s): OutputError: declared output(s) rows missing"),
        "{output}"
    );
    assert_eq!(started_tasks(&sandbox.events()), ["count"]);
}

#[test]
fn dry_run_prints_the_plan_and_runs_nothing() {
    let sandbox = Sandbox::new("dry-run");
    let file = sandbox.write("handoff.yaml", PARAMS_AND_OUTPUTS);
    let out = sandbox.run(&[
        file.to_str().unwrap(),
        "--dry-run",
        "--param",
        "region=us",
        "--name",
        "plan",
    ]);
    let output = text(&out);
    assert!(out.status.success(), "{output}");
    assert!(sandbox.events().is_empty());
    assert!(!sandbox.dir.join(".weir-run").exists());
    let plan = output.split_once("nothing is started\n").unwrap().1;
    assert_eq!(
        plan,
        "params: region=us

1. count
   $ sh -c 'echo \"rows=42\" > \"$WEIR_OUTPUTS\"'
   outputs rows

2. report  after count
   $ sh -c 'echo \"{{ tasks.count.outputs.rows }} rows in us (plan)\" > report.txt'
"
    );
}

#[test]
fn the_image_is_not_used_and_says_so_once() {
    let sandbox = Sandbox::new("image-note");
    let out = sandbox.run(&[repo().join("examples/diamond.yaml").to_str().unwrap()]);
    let output = text(&out);
    assert!(out.status.success(), "{output}");
    assert_eq!(output.matches("images are not used").count(), 1, "{output}");
    assert!(output.starts_with(
        "note: tasks run as processes on this machine; their images are not used (busybox:1.36)"
    ));
}

#[test]
fn an_invalid_file_is_not_run() {
    let sandbox = Sandbox::new("invalid");
    let out = sandbox.run(&[repo().join("tests/fixtures/invalid/cycle.yaml").to_str().unwrap()]);
    let output = text(&out);
    assert_eq!(out.status.code(), Some(2), "{output}");
    assert!(
        output.contains("cycle.yaml:11:18: Pipeline cycle: spec.tasks[0].dependsOn"),
        "{output}"
    );
    assert!(sandbox.events().is_empty());
}

/// The same fan-out the operator test runs: the task fails with the reason before any
/// instance starts, and the run fails.
#[test]
fn a_fan_out_instance_too_large_to_start_fails_the_task_with_the_reason() {
    let sandbox = Sandbox::new("oversized");
    let file = sandbox.write("oversized.yaml", &manifests::oversized_fan_out("oversized"));
    let out = sandbox.run(&[file.to_str().unwrap(), "--name", "oversized", "--plain"]);
    let output = text(&out);
    assert_eq!(out.status.code(), Some(1), "{output}");
    assert!(
        output.contains("shard failed: forEach instance 1: the task's resolved spec is"),
        "{output}"
    );
    assert!(
        output.contains("run oversized failed (TaskFailed: failed: shard)"),
        "{output}"
    );
    assert_eq!(started(&sandbox.events()), BTreeSet::from(["prep".to_string()]));
}

/// Outputs over the 4 KiB of a termination message: `weir run` keeps its artifacts in a
/// local directory, so it behaves as the operator does with an artifact store (`weir exec`
/// moves the large value through it) and the value reaches the next task whole.
#[test]
fn outputs_over_the_termination_message_limit_reach_the_next_task() {
    let sandbox = Sandbox::new("longout");
    let file = sandbox.write("longout.yaml", &manifests::long_output("longout"));
    let out = sandbox.run(&[file.to_str().unwrap(), "--name", "longout", "--plain"]);
    let output = text(&out);
    assert_eq!(out.status.code(), Some(0), "{output}");
    assert_eq!(
        started(&sandbox.events()),
        BTreeSet::from(["big".to_string(), "use".to_string()])
    );
    // `use` printed the size of what it was given: 5,000 characters and a newline.
    let log = std::fs::read_to_string(sandbox.dir.join(".weir-run/longout/use.attempt-1.log")).unwrap();
    assert_eq!(log.trim(), "5001", "{log}");
}

/// `weir run` keeps artifacts in a local directory and moves them with `weir exec`, as the
/// operator does with a bucket: a file, a directory and a fan-in reach the tasks reading
/// them, and a missing one is an `ArtifactError` naming the path.
#[test]
fn artifacts_move_through_a_local_directory_store() {
    let sandbox = Sandbox::new("artifacts");
    let work = sandbox.dir.join("work");
    let store = sandbox.dir.join("store");
    let file = sandbox.write(
        "artifacts.yaml",
        &format!(
            r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {{name: files}}
spec:
  defaults: {{image: busybox}}
  tasks:
    - name: make
      command: [sh, -c, 'mkdir -p {w}/make/dir/sub && echo model > {w}/make/model.bin && echo a > {w}/make/dir/sub/a.txt']
      artifacts:
        - {{name: model, path: {w}/make/model.bin}}
        - {{name: tree, path: {w}/make/dir}}
    - name: part
      forEach: {{items: [eu, us]}}
      command: [sh, -c, 'mkdir -p {w}/part && echo "{{{{ item }}}}" > {w}/part/{{{{ item }}}}']
      artifacts: [{{name: piece, path: '{w}/part/{{{{ item }}}}'}}]
    - name: use
      dependsOn: [make, part]
      command: [sh, -c, 'cat {w}/use/model.bin {w}/use/tree/sub/a.txt {w}/use/pieces/0 {w}/use/pieces/1 > {w}/seen']
      inputs:
        - {{from: tasks.make.artifacts.model, path: {w}/use/model.bin}}
        - {{from: tasks.make.artifacts.tree, path: {w}/use/tree}}
        - {{from: tasks.part.artifacts.piece, path: {w}/use/pieces}}
"#,
            w = work.display()
        ),
    );
    let out = sandbox.run(&[
        file.to_str().unwrap(),
        "--name",
        "files-1",
        "--artifact-dir",
        store.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(work.join("seen")).unwrap(),
        "model\na\neu\nus\n"
    );
    let model = store.join("local/files-1/files-1-make/1/model");
    assert_eq!(std::fs::read_to_string(&model).unwrap(), "model\n");
    assert!(
        store
            .join("local/files-1/files-1-make/1/tree/listing.json")
            .is_file()
    );

    // An artifact whose path is missing fails the attempt, saying which path.
    let missing = sandbox.write(
        "missing.yaml",
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: nothing}
spec:
  defaults: {image: busybox}
  tasks:
    - name: make
      command: [sh, -c, 'true']
      artifacts: [{name: model, path: /nonexistent/weir-test/model.bin}]
"#,
    );
    let out = sandbox.run(&[missing.to_str().unwrap(), "--name", "nothing-1"]);
    let output = text(&out);
    assert_eq!(out.status.code(), Some(1), "{output}");
    assert!(
        output.contains("ArtifactError") && output.contains("/nonexistent/weir-test/model.bin"),
        "{output}"
    );
}

#[test]
fn weir_run_says_it_sends_no_notifications_and_which_the_operator_would_have_sent() {
    let sandbox = Sandbox::new("unsent");
    let file = sandbox.write(
        "p.yaml",
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata:
  name: unsent
spec:
  tasks:
    - name: boom
      image: busybox
      command: ["sh", "-c", "exit 3"]
      deadline: {within: 1h, from: TaskStart}
  notifications:
    - name: oncall
      webhook: {url: "http://hooks.example.com/x"}
    - name: cheers
      events: [Succeeded]
      slack: {url: "http://chat.example.com/y"}
"#,
    );
    let out = sandbox.run(&[file.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", text(&out));
    let shown = text(&out);
    assert!(
        shown.contains(
            "note: notifications (oncall, cheers) and deadlines (boom: 1h after the task's start) are acted on by the operator only"
        ),
        "{shown}"
    );
    assert!(
        shown.contains(
            "not sent (weir run sends no notifications; the operator would have): Failed to oncall"
        ),
        "{shown}"
    );
    assert!(!shown.contains("to cheers"), "{shown}");
}

#[test]
fn a_delay_or_time_sensor_waits_locally_with_no_process_and_cluster_sensors_are_refused() {
    let sandbox = Sandbox::new("sensors");
    let file = sandbox.write(
        "sensors.yaml",
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: sensors}
spec:
  tasks:
    - name: pause
      wait: {delay: 2s}
    - name: moment
      wait: {time: {from: runStart, offset: 1s}}
    - name: late
      timeout: 1s
      wait: {delay: 1h}
    - name: after
      dependsOn: [pause, moment]
      image: busybox
      command: [sh, -c, 'echo after']
"#,
    );
    let started = std::time::Instant::now();
    let out = sandbox.run(&[file.to_str().unwrap()]);
    let all = text(&out);
    assert!(!out.status.success(), "late times out: {all}");
    assert!(
        all.contains("DeadlineExceeded") || all.contains("timed out"),
        "{all}"
    );
    let events = sandbox.events();
    let ran: Vec<&str> = events.iter().map(|e| e.task.as_str()).collect();
    assert!(
        ran.iter().all(|t| *t == "after"),
        "sensors started no process: {ran:?}"
    );
    assert!(
        events.iter().any(|e| e.task == "after" && e.kind == Kind::End(0)),
        "{all}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "after waited for the 2s delay"
    );

    let cluster = sandbox.write(
        "cluster.yaml",
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {name: cluster}
spec:
  tasks:
    - name: upstream
      wait: {pipelineRun: {pipeline: load}}
"#,
    );
    let out = sandbox.run(&[cluster.to_str().unwrap()]);
    let all = text(&out);
    assert!(!out.status.success());
    assert!(
        all.contains("task \"upstream\" waits for pipelineRun, which needs a cluster"),
        "{all}"
    );
}
