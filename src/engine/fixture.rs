//! Builders for pipelines in tests and benchmarks:
//! `pipeline().task("a").task("b").after(["a"]).build()`.

use crate::api::{PipelineSpec, RetryPolicy, TaskDefaults, TaskSpec, TriggerRule};

/// Starts a pipeline whose tasks default to image `busybox` running `true`.
pub fn pipeline() -> PipelineBuilder {
    PipelineBuilder {
        spec: PipelineSpec {
            defaults: Some(TaskDefaults {
                image: Some("busybox".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        in_finally: false,
    }
}

pub struct PipelineBuilder {
    spec: PipelineSpec,
    in_finally: bool,
}

impl PipelineBuilder {
    fn current(&mut self) -> &mut TaskSpec {
        let list = if self.in_finally {
            &mut self.spec.finally
        } else {
            &mut self.spec.tasks
        };
        list.last_mut().expect("call .task() first")
    }

    /// Adds a task.
    pub fn task(mut self, name: &str) -> Self {
        self.in_finally = false;
        self.spec.tasks.push(TaskSpec {
            name: name.into(),
            command: vec!["true".into()],
            ..Default::default()
        });
        self
    }

    /// Adds a finally task.
    pub fn finally(mut self, name: &str) -> Self {
        self.in_finally = true;
        self.spec.finally.push(TaskSpec {
            name: name.into(),
            command: vec!["true".into()],
            ..Default::default()
        });
        self
    }

    /// The last task depends on these.
    pub fn after<'a>(mut self, upstream: impl IntoIterator<Item = &'a str>) -> Self {
        self.current()
            .depends_on
            .extend(upstream.into_iter().map(String::from));
        self
    }

    pub fn rule(mut self, rule: TriggerRule) -> Self {
        self.current().trigger_rule = Some(rule);
        self
    }

    pub fn retries(mut self, limit: u32, delay: &str) -> Self {
        self.current().retries = Some(RetryPolicy {
            limit,
            delay: Some(delay.into()),
            ..Default::default()
        });
        self
    }

    pub fn command(mut self, command: &[&str]) -> Self {
        self.current().command = command.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn timeout(mut self, timeout: &str) -> Self {
        self.current().timeout = Some(timeout.into());
        self
    }

    pub fn parallelism(mut self, p: u32) -> Self {
        self.spec.parallelism = Some(p);
        self
    }

    pub fn run_timeout(mut self, timeout: &str) -> Self {
        self.spec.timeout = Some(timeout.into());
        self
    }

    pub fn build(self) -> PipelineSpec {
        self.spec
    }
}

/// A chain `t0 -> t1 -> ... -> t{n-1}`.
pub fn chain(n: usize) -> PipelineSpec {
    let mut b = pipeline();
    for i in 0..n {
        b = b.task(&format!("t{i}"));
        if i > 0 {
            let prev = format!("t{}", i - 1);
            b = b.after([prev.as_str()]);
        }
    }
    b.build()
}

/// One root, `n - 2` tasks after it, one task after all of them.
pub fn fan_out(n: usize) -> PipelineSpec {
    let n = n.max(3);
    let mut b = pipeline().task("root");
    let middle: Vec<String> = (0..n - 2).map(|i| format!("m{i}")).collect();
    for m in &middle {
        b = b.task(m).after(["root"]);
    }
    b.task("join").after(middle.iter().map(String::as_str)).build()
}

/// A random DAG: each task depends on up to `max_deps` earlier tasks, chosen by a small
/// deterministic generator seeded with `seed`.
pub fn random(n: usize, max_deps: usize, seed: u64) -> PipelineSpec {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut b = pipeline();
    for i in 0..n {
        b = b.task(&format!("t{i}"));
        if i > 0 {
            let k = (next() as usize) % (max_deps + 1);
            let mut deps: Vec<String> = (0..k).map(|_| format!("t{}", (next() as usize) % i)).collect();
            deps.sort();
            deps.dedup();
            b = b.after(deps.iter().map(String::as_str));
        }
    }
    b.build()
}
