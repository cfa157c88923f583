//! Pipelines written out as YAML, shared by the operator tests and the `weir run` tests (no
//! Kubernetes client here, so the local-runner tests can include this file alone).

#![allow(dead_code)]

/// A Pipeline and its PipelineRun `name`: `prep`, then `shard` fanned out over two items
/// whose args repeat the item 200 times. The second item is long enough that its
/// instance's resolved spec is over the 512 KiB Weir allows, while the first is tiny, so
/// the fan-out cannot start as a whole.
pub fn oversized_fan_out(name: &str) -> String {
    let big = "x".repeat(5_300);
    let args = vec!["\"{{ item }}\""; 200].join(", ");
    format!(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {{name: {name}}}
spec:
  params: [{{name: items, type: List}}]
  defaults: {{image: busybox}}
  tasks:
    - {{name: prep, command: [sh, -c, "true"]}}
    - name: shard
      dependsOn: [prep]
      forEach: {{items: "{{{{ params.items }}}}"}}
      command: [sh, -c, "true"]
      args: [{args}]
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {{name: {name}}}
spec:
  pipelineRef: {{name: {name}}}
  params: {{items: [small, {big}]}}
"#
    )
}

/// A Pipeline and its PipelineRun `name`: task `big` writes `v=` and 5,000 characters to
/// `$WEIR_OUTPUTS` (`key=value` form, over the 4 KiB a termination message keeps); task
/// `use` reads the value.
pub fn long_output(name: &str) -> String {
    format!(
        r#"
apiVersion: weir.dev/v1alpha1
kind: Pipeline
metadata: {{name: {name}}}
spec:
  defaults: {{image: busybox}}
  tasks:
    - name: big
      command: [sh, -c, 'printf "v=%s" "$(head -c 5000 /dev/zero | tr "\0" x)" > "$WEIR_OUTPUTS"']
      outputs: [{{name: v}}]
    - name: use
      dependsOn: [big]
      command: [sh, -c, 'echo "$1" | wc -c', sh, "{{{{ tasks.big.outputs.v }}}}"]
---
apiVersion: weir.dev/v1alpha1
kind: PipelineRun
metadata: {{name: {name}}}
spec:
  pipelineRef: {{name: {name}}}
"#
    )
}
