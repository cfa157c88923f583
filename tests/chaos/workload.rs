//! The pipelines the chaos suite and the soak run: between them they have retries, a
//! fan-out with fan-in, `finally` tasks after a failure, and outputs passed downstream and
//! checked there. Each task sleeps a little so that faults land while tasks run.

use weir::api::RunPhase;

/// One pipeline of the workload.
pub struct Workload {
    pub name: &'static str,
    /// What the pipeline gets without faults (checked against the fault-free baseline, so a
    /// change in Weir's behaviour shows up there first and not as a chaos failure).
    pub designed: RunPhase,
    /// The pipeline spec (`tasks`, `finally`, ...), as YAML at indentation 0.
    spec: &'static str,
}

pub const WORKLOAD: &[Workload] = &[
    Workload {
        name: "retries",
        designed: RunPhase::Succeeded,
        // `flaky` fails its first attempt and succeeds on the second.
        spec: r#"
defaults: {image: busybox}
tasks:
  - {name: s0, command: [sh, -c, 'sleep 1']}
  - {name: s1, dependsOn: [s0], command: [sh, -c, 'sleep 1']}
  - {name: s2, dependsOn: [s1], command: [sh, -c, 'sleep 1']}
  - name: flaky
    dependsOn: [s2]
    retries: {limit: 3, delay: 1s}
    command: [sh, -c, 'sleep 1; [ "$WEIR_ATTEMPT" -ge 2 ]']
  - {name: last, dependsOn: [flaky], command: [sh, -c, 'sleep 1']}
"#,
    },
    Workload {
        name: "fanout",
        designed: RunPhase::Succeeded,
        // `list` outputs four parts, `shard` runs once per part, `merge` gets every
        // instance's output as one list and fails unless it is exactly the expected one.
        spec: r#"
defaults: {image: busybox}
tasks:
  - name: list
    command: [sh, -c]
    args: ['printf "{\"parts\": [\"p1\", \"p2\", \"p3\", \"p4\"]}" > "$WEIR_OUTPUTS"']
    outputs: [{name: parts}]
  - name: shard
    dependsOn: [list]
    forEach: {items: "{{ tasks.list.outputs.parts }}"}
    env: [{name: PART, value: "{{ item }}"}]
    command: [sh, -c]
    args: ['sleep 2; echo "done=$PART-ok" > "$WEIR_OUTPUTS"']
    outputs: [{name: done}]
  - name: merge
    dependsOn: [shard]
    env: [{name: DONE, value: "{{ tasks.shard.outputs.done }}"}]
    command: [sh, -c]
    args:
      - |
        echo "merging $DONE"
        [ "$DONE" = '["p1-ok","p2-ok","p3-ok","p4-ok"]' ] || exit 1
        echo "count=4" > "$WEIR_OUTPUTS"
    outputs: [{name: count}]
"#,
    },
    Workload {
        name: "finally",
        designed: RunPhase::Failed,
        // `broken` fails both its attempts, `publish` is then upstream-failed, and the
        // `finally` tasks run anyway: the run fails, its clean-up succeeds.
        spec: r#"
defaults: {image: busybox}
tasks:
  - name: work
    command: [sh, -c, 'sleep 1; echo "rows=42" > "$WEIR_OUTPUTS"']
    outputs: [{name: rows}]
  - name: broken
    dependsOn: [work]
    retries: {limit: 1, delay: 1s}
    command: [sh, -c, 'sleep 1; echo "no such table" >&2; exit 3']
  - {name: publish, dependsOn: [broken], command: [sh, -c, 'true']}
finally:
  - name: cleanup
    command: [sh, -c, 'sleep 1; echo "cleaned=yes" > "$WEIR_OUTPUTS"']
    outputs: [{name: cleaned}]
  - {name: notify, dependsOn: [cleanup], command: [sh, -c, 'sleep 1']}
"#,
    },
    Workload {
        name: "outputs",
        designed: RunPhase::Succeeded,
        // A 1,492-character value (well under the 4 KiB limit) and a JSON one travel
        // downstream; `consume` fails unless both arrive exactly as written.
        spec: r#"
defaults: {image: busybox}
tasks:
  - name: produce
    command: [sh, -c]
    args:
      - |
        sleep 1
        printf '{"big": "%s", "meta": {"rows": 7, "ok": true}}' "$(seq 1 400 | tr '\n' ,)" > "$WEIR_OUTPUTS"
    outputs: [{name: big}, {name: meta}]
  - name: consume
    dependsOn: [produce]
    env:
      - {name: BIG, value: "{{ tasks.produce.outputs.big }}"}
      - {name: META, value: "{{ tasks.produce.outputs.meta }}"}
    command: [sh, -c]
    args:
      - |
        sleep 1
        [ "$BIG" = "$(seq 1 400 | tr '\n' ,)" ] || { echo "big changed: ${#BIG} characters"; exit 1; }
        [ "$META" = '{"ok":true,"rows":7}' ] || [ "$META" = '{"rows":7,"ok":true}' ] || { echo "meta changed: $META"; exit 1; }
        echo "length=${#BIG}" > "$WEIR_OUTPUTS"
    outputs: [{name: length}]
"#,
    },
];

fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.trim_matches('\n')
        .lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{pad}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Workload {
    /// A PipelineRun `run` carrying this pipeline inline.
    pub fn run_manifest(&self, run: &str) -> String {
        format!(
            "apiVersion: weir.dev/v1alpha1\nkind: PipelineRun\nmetadata:\n  name: {run}\n  labels: {{chaos.weir.dev/workload: {}}}\nspec:\n  pipelineSpec:\n{}\n",
            self.name,
            indent(self.spec, 4)
        )
    }

    /// A Pipeline running on `cron` (with catch-up, so that every interval gets its run
    /// whatever the faults), keeping `history` finished runs of each outcome.
    pub fn scheduled_manifest(&self, cron: &str, history: u32) -> String {
        format!(
            "apiVersion: weir.dev/v1alpha1\nkind: Pipeline\nmetadata:\n  name: {}\nspec:\n  schedule: {{cron: '{cron}', catchup: true}}\n  successfulRunsHistoryLimit: {history}\n  failedRunsHistoryLimit: {history}\n{}\n",
            self.name,
            indent(self.spec, 2)
        )
    }
}

pub fn workload(name: &str) -> &'static Workload {
    WORKLOAD
        .iter()
        .find(|w| w.name == name)
        .unwrap_or_else(|| panic!("no workload {name}"))
}
