//! Fuzzing of everything Weir reads from users: manifests (YAML, the CRD schema, engine
//! validation), templates, cron expressions and time zones, durations, task outputs, params
//! and the dates of `weir backfill`.
//!
//! Property-based, on stable Rust: generators that know each grammar, and mutations of the
//! repository's own manifests. Every target runs a fixed number of cases from a fixed seed,
//! so a run in CI is repeatable and bounded; each input must be handled without a panic,
//! with an error that names the problem, and within a memory and CPU-time ceiling
//! ([`meter`]). The targets are named `fuzz_*`: `hack/test.sh` runs them as their own step
//! (two at a time, each with the CPU it needs) and leaves them out of the main `cargo test`
//! with `--skip fuzz_` (see docs/contributing.md, "Fuzzing"):
//!
//! ```sh
//! cargo test --test fuzz -- fuzz_ --nocapture --test-threads 2      # what CI runs
//! WEIR_FUZZ_SCALE=20 WEIR_FUZZ_SEED=$RANDOM cargo test --release --test fuzz -- fuzz_
//! ```
//!
//! Every crash found is kept in `regressions.rs` as a plain test with its input.

mod inputs;
mod manifest;
mod meter;
mod regressions;
mod values;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: meter::Counting = meter::Counting;

/// `WEIR_FUZZ_SCALE` multiplies every target's case count (1 in CI).
fn scale() -> u32 {
    std::env::var("WEIR_FUZZ_SCALE")
        .ok()
        .map(|s| s.parse().expect("WEIR_FUZZ_SCALE is a whole number"))
        .unwrap_or(1)
}

/// `WEIR_FUZZ_SEED` picks other inputs than CI's (0).
fn seed(target: &str) -> [u8; 32] {
    let base: u64 = std::env::var("WEIR_FUZZ_SEED")
        .ok()
        .map(|s| s.parse().expect("WEIR_FUZZ_SEED is a number"))
        .unwrap_or(0);
    // Each target its own stream, so adding one does not change the inputs of the others.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ base;
    for b in target.bytes() {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut out = [0u8; 32];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&hash.rotate_left(i as u32 * 16).to_le_bytes());
    }
    out
}

/// Runs `cases` inputs of `strategy` through `check`, from the target's fixed seed. A
/// failure is shrunk (within a bounded time) and reported with its smallest input.
pub fn fuzz<S: Strategy>(
    target: &str,
    cases: u32,
    strategy: S,
    check: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let cases = cases * scale();
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 4_096,
        max_shrink_time: 60_000,
        max_local_rejects: cases * 4,
        max_global_rejects: cases * 4,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed(target));
    let mut runner = TestRunner::new_with_rng(config, rng);
    let started = Instant::now();
    meter::take_worst();
    let outcome = runner.run(&strategy, check);
    let worst = meter::take_worst();
    eprintln!(
        "fuzz {target}: {cases} cases in {:.1?}; worst input: {:.1} MiB held, {:.1?} CPU",
        started.elapsed(),
        worst.peak_bytes as f64 / (1 << 20) as f64,
        worst.cpu,
    );
    match outcome {
        Ok(()) => {}
        Err(TestError::Fail(why, input)) => {
            panic!("fuzz target {target} failed: {why}\nminimal input: {input:#?}")
        }
        Err(TestError::Abort(why)) => panic!("fuzz target {target} aborted: {why}"),
    }
}

/// What a panic said.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// A check's failure, as proptest wants it.
pub fn fail(why: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(why.to_string())
}

/// Ceilings per input, for the debug build CI runs (an input typically takes a few
/// milliseconds and a few hundred KiB).
pub mod ceilings {
    use super::*;
    use crate::meter::Ceiling;

    /// A manifest file: parse, schema and engine checks, and for valid pipelines the graph
    /// and every task's templates rendered. (A 10,000-task pipeline of 1 MB takes 37 MiB
    /// and 1.5 s.)
    pub const MANIFEST: Ceiling = Ceiling {
        base_bytes: 64 << 20,
        bytes_per_input_byte: 64,
        cpu: Duration::from_secs(5),
    };

    /// A manifest file with anchors, whose aliases may make it as costly as the YAML limits
    /// allow whatever its size (250,000 nodes, 8 MiB of text: the worst seen is an alias bomb
    /// of 1 KB that holds 76 MiB).
    pub const MANIFEST_WITH_ANCHORS: Ceiling = Ceiling {
        base_bytes: 128 << 20,
        bytes_per_input_byte: 64,
        cpu: Duration::from_secs(5),
    };

    /// A single value: a template, a cron expression, a duration, outputs.
    pub const VALUE: Ceiling = Ceiling {
        base_bytes: 16 << 20,
        bytes_per_input_byte: 16,
        cpu: Duration::from_secs(2),
    };
}
