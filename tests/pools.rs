//! Pools on a real control plane. Every pool task appends `start` and `end` lines with the
//! time to a file of the test as its first and last act: the node agent runs pods as local
//! processes, so the file says when each task really ran, whatever the operator believes.
//! The limits are checked from that file, not from what the operator writes.

mod common;

use common::*;
use kube::api::{Api, Patch, PatchParams};
use std::path::PathBuf;
use std::time::Duration;
use weir::api::{Pool, RunPhase, TaskRun};
use weir_testenv::{TestNamespace, wait_for};

const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// The file pool tasks write their start and end to.
struct Timeline {
    path: PathBuf,
}

/// One line of the timeline: `start`/`end`, `<run>/<task>`, nanoseconds.
#[derive(Clone, Debug, PartialEq)]
struct Mark {
    start: bool,
    who: String,
    at: u128,
}

impl Timeline {
    fn new(ns: &TestNamespace) -> Timeline {
        let path = std::env::temp_dir().join(format!("weir-pools-{}.timeline", ns.name()));
        let _ = std::fs::remove_file(&path);
        Timeline { path }
    }

    /// A task's command: marks its start, sleeps, marks its end.
    fn command(&self, seconds: f64) -> String {
        let file = self.path.display();
        let mark =
            |what: &str| format!(r#"echo "{what} $WEIR_PIPELINE_RUN/$WEIR_TASK $(date +%s%N)" >> {file}"#);
        format!("[sh, -c, '{}; sleep {seconds}; {}']", mark("start"), mark("end"))
    }

    /// A task's command: marks its start, waits (up to 20 s) until another task is running
    /// too, sleeps, marks its end. On a loaded machine a task of a second may start and end
    /// before the next one's process starts; this keeps two at once whenever the pool
    /// allows two, and a pool that allowed only one would still show one.
    fn overlapping_command(&self, seconds: f64) -> String {
        let file = self.path.display();
        let mark =
            |what: &str| format!(r#"echo "{what} $WEIR_PIPELINE_RUN/$WEIR_TASK $(date +%s%N)" >> {file}"#);
        let running = format!("$(( $(grep -c ^start {file}) - $(grep -c ^end {file}) ))");
        format!(
            "[sh, -c, '{}; i=0; while [ {running} -lt 2 ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; sleep {seconds}; {}']",
            mark("start"),
            mark("end")
        )
    }

    /// A task's command: marks its start, waits until the test calls [`Timeline::release`],
    /// marks its end.
    fn held_command(&self) -> String {
        let file = self.path.display();
        let release = self.release_file();
        let mark =
            |what: &str| format!(r#"echo "{what} $WEIR_PIPELINE_RUN/$WEIR_TASK $(date +%s%N)" >> {file}"#);
        format!(
            "[sh, -c, '{}; while [ ! -e {} ]; do sleep 0.1; done; {}']",
            mark("start"),
            release.display(),
            mark("end")
        )
    }

    fn release_file(&self) -> PathBuf {
        self.path.with_extension("release")
    }

    /// Lets every task of [`Timeline::held_command`] end.
    fn release(&self) {
        std::fs::write(self.release_file(), "").unwrap();
    }

    async fn wait_started(&self, count: usize) {
        wait_for(
            &format!("{count} task(s) to start"),
            Duration::from_secs(60),
            || async {
                let started = self.started();
                (started.len() >= count)
                    .then_some(())
                    .ok_or(format!("{started:?}"))
            },
        )
        .await;
    }

    fn marks(&self) -> Vec<Mark> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let mut marks: Vec<Mark> = text
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split(' ').collect();
                Some(Mark {
                    start: f.first()? == &"start",
                    who: f.get(1)?.to_string(),
                    at: f.get(2)?.parse().ok()?,
                })
            })
            .collect();
        // An end and a start at the same instant: the end first (the slot was free).
        marks.sort_by_key(|m| (m.at, m.start));
        marks
    }

    /// The most tasks that ran at once.
    fn most_at_once(&self) -> usize {
        let (mut running, mut most) = (0usize, 0usize);
        for m in self.marks() {
            if m.start {
                running += 1;
                most = most.max(running);
            } else {
                running = running.saturating_sub(1);
            }
        }
        most
    }

    /// For each start that had to wait for a slot (all but the first `slots`): the time from
    /// the end just before it, in milliseconds, sorted. What a freed slot costs to hand on.
    fn handoffs_ms(&self, slots: usize) -> Vec<u128> {
        let marks = self.marks();
        let mut out: Vec<u128> = marks
            .iter()
            .enumerate()
            .filter(|(_, m)| m.start)
            .skip(slots)
            .filter_map(|(i, m)| {
                let freed = marks[..i].iter().rev().find(|e| !e.start)?;
                Some((m.at - freed.at) / 1_000_000)
            })
            .collect();
        out.sort();
        out
    }

    fn started(&self) -> Vec<String> {
        self.marks()
            .into_iter()
            .filter(|m| m.start)
            .map(|m| m.who)
            .collect()
    }

    fn time_of(&self, start: bool, who: &str) -> u128 {
        self.marks()
            .into_iter()
            .find(|m| m.start == start && m.who == who)
            .unwrap_or_else(|| {
                panic!(
                    "no {} of {who} in {:?}",
                    if start { "start" } else { "end" },
                    self.marks()
                )
            })
            .at
    }
}

impl Drop for Timeline {
    fn drop(&mut self) {
        // A task still waiting for its release would wait forever.
        let _ = std::fs::write(self.release_file(), "");
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.path);
            let _ = std::fs::remove_file(self.release_file());
        }
    }
}

fn pool(name: &str, slots: u32) -> String {
    format!(
        "apiVersion: weir.dev/v1alpha1\nkind: Pool\nmetadata: {{name: {name}}}\nspec: {{slots: {slots}}}\n"
    )
}

/// A task of a pool, as a line of a pipeline's `tasks`.
fn pool_task(name: &str, pool: &str, extra: &str, command: &str) -> String {
    format!("      - {{name: {name}, image: busybox, pool: {pool}, command: {command}{extra}}}\n")
}

fn run(name: &str, tasks: &str) -> String {
    format!(
        "---\napiVersion: weir.dev/v1alpha1\nkind: PipelineRun\nmetadata: {{name: {name}}}\nspec:\n  pipelineSpec:\n    tasks:\n{tasks}"
    )
}

async fn wait_all_succeeded(ns: &TestNamespace, runs: &[String]) {
    for name in runs {
        let done = wait_run_done(ns, name, RUN_TIMEOUT).await;
        assert_eq!(phase(&done), RunPhase::Succeeded, "{name}: {:?}", done.status);
    }
}

/// The `Succeeded` condition's reason and message of a TaskRun.
async fn waiting_reason(ns: &TestNamespace, run: &str, task: &str) -> Option<(String, String)> {
    let tr = task_run_opt(ns, run, task).await?;
    let status = tr.status?;
    let c = weir::api::condition::find(&status.conditions, "Succeeded")?;
    Some((c.reason.clone(), c.message.clone()))
}

async fn wait_reason(ns: &TestNamespace, run: &str, task: &str, reason: &str) -> String {
    wait_for(
        &format!("task {task} of {run} to wait with reason {reason}"),
        Duration::from_secs(60),
        || async {
            match waiting_reason(ns, run, task).await {
                Some((r, message)) if r == reason => Ok(message),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

async fn pool_status(ns: &TestNamespace, name: &str) -> weir::api::PoolStatus {
    let pools: Api<Pool> = ns.api();
    pools.get(name).await.unwrap().status.unwrap_or_default()
}

/// Three runs of five tasks each on a pool of two slots: never more than two at once, and
/// two at once for a while (the pool is used, not just obeyed). With `kills`, the operator
/// is killed that many times while the runs go on: a restarted operator takes the slots
/// held from the pool's status and the live TaskRuns, never more. With `second`, another
/// operator process (no leader election) reconciles the same objects at the same time.
async fn three_runs_on_two_slots(prefix: &str, kills: usize, second: bool) {
    let (ns, mut op) = setup(prefix).await;
    let _second = second.then(|| Operator::start_with(&ns, Some("second"), &[]));
    let timeline = Timeline::new(&ns);
    let tasks: String = (1..=5)
        .map(|i| {
            pool_task(
                &format!("t{i}"),
                "warehouse",
                "",
                &timeline.overlapping_command(1.0),
            )
        })
        .collect();
    let runs: Vec<String> = (1..=3).map(|i| format!("load-{i}")).collect();
    let manifests: String = pool("warehouse", 2) + &runs.iter().map(|r| run(r, &tasks)).collect::<String>();
    ns.apply(&manifests);
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        op.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        op.restart();
    }
    wait_all_succeeded(&ns, &runs).await;
    assert_eq!(timeline.started().len(), 15, "{:?}", timeline.marks());
    assert_eq!(timeline.most_at_once(), 2, "{:#?}", timeline.marks());
    // Measured, not asserted: from a task's end to the start of the next one in line.
    let handoffs = timeline.handoffs_ms(2);
    if let (Some(median), Some(max)) = (handoffs.get(handoffs.len() / 2), handoffs.last()) {
        eprintln!(
            "{prefix}: slot handed on in {median} ms (median), {max} ms (max) over {} starts",
            handoffs.len()
        );
    }
    wait_for("the pool to be empty", Duration::from_secs(30), || async {
        let status = pool_status(&ns, "warehouse").await;
        (status.occupied == 0 && status.queued == 0 && status.holders.is_empty())
            .then_some(())
            .ok_or(format!("{status:?}"))
    })
    .await;
    if kills == 0 && !second {
        let queued = events_with_reason(&ns, "TaskQueued");
        assert!(
            queued.iter().any(|e| e.contains("of pool \"warehouse\"")),
            "{queued:?}"
        );
    }
}

#[tokio::test]
async fn three_runs_of_five_tasks_never_run_more_than_the_pool_allows() {
    three_runs_on_two_slots("pool-limit", 0, false).await;
}

/// The short version of the chaos scenario (docs/pools.md describes the long one).
#[tokio::test]
async fn killing_the_operator_never_lets_more_tasks_run_than_the_pool_allows() {
    three_runs_on_two_slots("pool-kill", 4, false).await;
}

/// Two operator processes at once (as two shards, or a deposed leader still finishing a
/// reconcile) both decide admissions for the same pool: the resourceVersion of the Pool's
/// status lets only one of them take a slot.
#[tokio::test]
async fn two_operators_at_once_never_let_more_tasks_run_than_the_pool_allows() {
    three_runs_on_two_slots("pool-two-ops", 0, true).await;
}

/// With the pool's only slot taken, a task of weight 10 and one of weight 1 wait; the
/// heavier starts first, although it was created after the other.
#[tokio::test]
async fn higher_priority_tasks_start_first() {
    let (ns, _op) = setup("pool-prio").await;
    let timeline = Timeline::new(&ns);
    let hold = pool_task("hold", "api", "", &timeline.held_command());
    ns.apply(&(pool("api", 1) + &run("holder", &hold)));
    timeline.wait_started(1).await;
    let low = pool_task("call", "api", ", priorityWeight: 1", &timeline.command(0.5));
    ns.apply(&run("low", &low));
    wait_reason(&ns, "low", "call", "Queued").await;
    let high = pool_task("call", "api", ", priorityWeight: 10", &timeline.command(0.5));
    ns.apply(&run("high", &high));
    let message = wait_reason(&ns, "high", "call", "Queued").await;
    assert!(message.contains("pool \"api\""), "{message}");
    // The queue in the pool's status, in the order the tasks will start.
    wait_for("the pool's queue", Duration::from_secs(30), || async {
        let queue = pool_status(&ns, "api").await.queue;
        let queue: Vec<(String, i64)> = queue.into_iter().map(|q| (q.task_run, q.priority)).collect();
        (queue == [("high-call".to_string(), 10), ("low-call".to_string(), 1)])
            .then_some(())
            .ok_or(format!("{queue:?}"))
    })
    .await;
    timeline.release();
    wait_all_succeeded(&ns, &["holder".into(), "low".into(), "high".into()]).await;
    assert_eq!(
        timeline.started(),
        ["holder/hold", "high/call", "low/call"],
        "{:#?}",
        timeline.marks()
    );
    assert_eq!(timeline.most_at_once(), 1);
}

/// A task taking both slots of a pool waits while one of them is taken, and starts only
/// once the task holding it ended.
#[tokio::test]
async fn a_task_taking_two_slots_waits_for_both() {
    let (ns, _op) = setup("pool-two").await;
    let timeline = Timeline::new(&ns);
    let small = pool_task("small", "gpu", "", &timeline.held_command());
    ns.apply(&(pool("gpu", 2) + &run("one", &small)));
    timeline.wait_started(1).await;
    let big = pool_task("big", "gpu", ", poolSlots: 2", &timeline.command(0.5));
    ns.apply(&run("two", &big));
    let message = wait_reason(&ns, "two", "big", "Queued").await;
    assert_eq!(
        message,
        "waiting for 2 slot(s) of pool \"gpu\": 1 of 2 occupied; 1st in line"
    );
    timeline.release();
    wait_all_succeeded(&ns, &["one".into(), "two".into()]).await;
    assert!(
        timeline.time_of(true, "two/big") >= timeline.time_of(false, "one/small"),
        "{:#?}",
        timeline.marks()
    );
}

/// A pool of no slots starts nothing; made larger, it lets as many tasks start at once as it
/// now has slots.
#[tokio::test]
async fn resizing_a_pool_takes_effect_at_once() {
    let (ns, _op) = setup("pool-size").await;
    let timeline = Timeline::new(&ns);
    let tasks: String = (1..=4)
        .map(|i| pool_task(&format!("t{i}"), "db", "", &timeline.held_command()))
        .collect();
    ns.apply(&(pool("db", 0) + &run("grow", &tasks)));
    for i in 1..=4 {
        wait_reason(&ns, "grow", &format!("t{i}"), "PoolTooSmall").await;
    }
    assert!(timeline.started().is_empty());
    let pools: Api<Pool> = ns.api();
    pools
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"slots": 3}})),
        )
        .await
        .unwrap();
    // Three start, the fourth waits for one of them to end: had it started too, four would
    // have run at once (none ends before the release).
    timeline.wait_started(3).await;
    wait_for(
        "three slots taken, one task in line",
        Duration::from_secs(30),
        || async {
            let status = pool_status(&ns, "db").await;
            (status.occupied == 3 && status.queued == 1)
                .then_some(())
                .ok_or(format!("{status:?}"))
        },
    )
    .await;
    timeline.release();
    wait_all_succeeded(&ns, &["grow".into()]).await;
    assert_eq!(timeline.most_at_once(), 3, "{:#?}", timeline.marks());
}

/// A task naming a pool that does not exist waits with reason `PoolNotFound` (condition and
/// Event name the pool), and starts once the pool is created.
#[tokio::test]
async fn a_missing_pool_is_reported_and_its_tasks_start_once_it_exists() {
    let (ns, _op) = setup("pool-missing").await;
    let timeline = Timeline::new(&ns);
    ns.apply(&run(
        "early",
        &pool_task("load", "later", "", &timeline.command(0.2)),
    ));
    let message = wait_reason(&ns, "early", "load", "PoolNotFound").await;
    assert_eq!(
        message,
        format!(
            "waiting: pool \"later\" does not exist in namespace \"{}\"; the task starts once it is created (kind: Pool)",
            ns.name()
        )
    );
    wait_for("the PoolNotFound Event", Duration::from_secs(30), || async {
        let events = events_with_reason(&ns, "PoolNotFound");
        events.iter().any(|e| e.contains("task load")).then_some(())
    })
    .await;
    let trs: Api<TaskRun> = ns.api();
    assert!(
        trs.get("early-load")
            .await
            .unwrap()
            .status
            .unwrap()
            .attempts
            .is_empty()
    );
    // What `weir get` shows of it: Queued, and why.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["get", "early", "-n", ns.name()])
        .env("KUBECONFIG", ns.kubeconfig())
        .env("NO_COLOR", "1")
        .output()
        .expect("running weir get");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains(" load ")).unwrap_or_default();
    assert!(
        line.contains("Queued") && line.contains("pool \"later\" does not exist"),
        "{text}"
    );
    ns.apply(&pool("later", 1));
    wait_all_succeeded(&ns, &["early".into()]).await;
}

/// Deleting a pool in use stops nothing that runs, and a pool made again under its name
/// counts the attempt still running as a holder: the task waiting meanwhile does not start
/// beside it.
#[tokio::test]
async fn a_pool_deleted_and_made_again_while_in_use_never_overshoots() {
    let (ns, _op) = setup("pool-recreate").await;
    let timeline = Timeline::new(&ns);
    let first = pool_task("first", "api", "", &timeline.held_command());
    ns.apply(&(pool("api", 1) + &run("one", &first)));
    timeline.wait_started(1).await;
    let second = pool_task("second", "api", "", &timeline.held_command());
    ns.apply(&run("two", &second));
    wait_reason(&ns, "two", "second", "Queued").await;

    let pools: Api<Pool> = ns.api();
    pools.delete("api", &Default::default()).await.unwrap();
    wait_for("the pool to be gone", Duration::from_secs(30), || async {
        pools.get_opt("api").await.ok()?.is_none().then_some(())
    })
    .await;
    ns.apply(&pool("api", 1));
    wait_for(
        "the running task adopted, the other in line",
        Duration::from_secs(60),
        || async {
            let status = pool_status(&ns, "api").await;
            let adopted = status
                .holders
                .iter()
                .map(|h| h.task_run.as_str())
                .eq(["one-first"]);
            (adopted && status.queued == 1)
                .then_some(())
                .ok_or(format!("{status:?}"))
        },
    )
    .await;
    assert_eq!(timeline.started(), ["one/first"], "{:#?}", timeline.marks());
    timeline.release();
    wait_all_succeeded(&ns, &["one".into(), "two".into()]).await;
    assert_eq!(timeline.most_at_once(), 1, "{:#?}", timeline.marks());
}
