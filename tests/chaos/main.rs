//! Runs under faults (issue 11): the chaos suite (`chaos::*`, in CI through hack/test.sh)
//! and the soak (`soak::*`, by hand through hack/soak.sh).
//!
//! Both break the control plane on purpose, so they run on an environment of their own
//! (`WEIR_CHAOS_ENV_DIR`, default `~/.cache/weir/chaos-env`, every port shifted by
//! `WEIR_CHAOS_PORT_OFFSET`, default 1000), never the shared one other tests use. Run them
//! one at a time:
//!
//! ```sh
//! cargo test --test chaos -- --test-threads 1 --nocapture chaos::
//! ```
//!
//! After each scenario every run must be finished, with the outcome the same pipeline gets
//! without faults (a baseline measured first), no attempt may have two Jobs, every Job must
//! be in its TaskRun's attempt history, and outputs must arrive intact. Each prints
//! `chaos summary [scenario]: runs=… faults=… finished=… same-outcome=… duplicates=…
//! attempts-lost=…`, also appended to `$WEIR_CHAOS_SUMMARY` when set.
//!
//! The main `cargo test` step of hack/test.sh skips them (`--skip chaos:: --skip soak::`).

#[path = "../common/mod.rs"]
mod common;

mod chaos;
mod harness;
mod soak;
mod workload;
