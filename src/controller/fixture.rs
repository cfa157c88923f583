//! Small builders for the controller's unit tests: a pipeline `etl` in namespace `data` and
//! its runs, so a test states only what it is about.

use crate::api::{
    Pipeline, PipelineRef, PipelineRun, PipelineRunSpec, PipelineRunStatus, PipelineSpec, RunPhase, Trigger,
    labels,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::Resource;

/// An instant written the way tests read best: `"2024-03-01T02:00:00Z"`.
pub fn ts(text: &str) -> jiff::Timestamp {
    text.parse().unwrap()
}

/// Pipeline `etl` in namespace `data`, generation 1, created at the start of March 2024.
pub fn mk_pipeline() -> Pipeline {
    let mut p = Pipeline::new("etl", PipelineSpec::default());
    p.metadata.namespace = Some("data".into());
    p.metadata.uid = Some("uid-etl".into());
    p.metadata.generation = Some(1);
    p.metadata.creation_timestamp = Some(Time(ts("2024-03-01T00:00:00Z")));
    p
}

/// A run of [`mk_pipeline`], owned by it, created at its logical date. `Pending` has not
/// started; any other phase has, and a final phase finished an hour after the logical date.
pub fn mk_run(name: &str, phase: RunPhase, logical_date: &str) -> PipelineRun {
    let logical = ts(logical_date);
    let mut run = PipelineRun::new(
        name,
        PipelineRunSpec {
            pipeline_ref: Some(PipelineRef { name: "etl".into() }),
            logical_date: Some(Time(logical)),
            ..Default::default()
        },
    );
    run.metadata.namespace = Some("data".into());
    run.metadata.uid = Some(format!("uid-{name}"));
    run.metadata.creation_timestamp = Some(Time(logical));
    run.metadata.owner_references = Some(vec![
        mk_pipeline()
            .controller_owner_ref(&())
            .expect("the pipeline has a uid"),
    ]);
    let started = phase != RunPhase::Pending;
    run.status = Some(PipelineRunStatus {
        phase: Some(phase),
        start_time: started.then_some(Time(logical)),
        completion_time: phase
            .is_terminal()
            .then(|| Time(logical + jiff::SignedDuration::from_hours(1))),
        ..Default::default()
    });
    run
}

/// What tests change on a run after [`mk_run`].
pub trait RunBuilder {
    /// Labelled as made by `trigger`.
    fn triggered_by(self, trigger: Trigger) -> Self;
    /// Created by hand: no owner.
    fn not_owned(self) -> Self;
    /// Owned by another object than the pipeline.
    fn owned_by_uid(self, uid: &str) -> Self;
    /// Finished at `at` instead of an hour after its logical date.
    fn finished_at(self, at: &str) -> Self;
    /// `spec.cancelled` set.
    fn cancelled(self) -> Self;
    /// Created at `at` instead of at its logical date.
    fn created_at(self, at: &str) -> Self;
}

impl RunBuilder for PipelineRun {
    fn triggered_by(mut self, trigger: Trigger) -> Self {
        self.metadata
            .labels
            .get_or_insert_default()
            .insert(labels::TRIGGER.into(), trigger.as_str().into());
        self
    }

    fn not_owned(mut self) -> Self {
        self.metadata.owner_references = None;
        self
    }

    fn owned_by_uid(mut self, uid: &str) -> Self {
        self.metadata.owner_references = Some(vec![OwnerReference {
            uid: uid.into(),
            ..Default::default()
        }]);
        self
    }

    fn finished_at(mut self, at: &str) -> Self {
        self.status.get_or_insert_default().completion_time = Some(Time(ts(at)));
        self
    }

    fn cancelled(mut self) -> Self {
        self.spec.cancelled = true;
        self
    }

    fn created_at(mut self, at: &str) -> Self {
        self.metadata.creation_timestamp = Some(Time(ts(at)));
        self
    }
}

/// The names of `runs`, in order.
pub fn names<'a>(runs: impl IntoIterator<Item = &'a PipelineRun>) -> Vec<String> {
    use kube::ResourceExt;
    runs.into_iter().map(ResourceExt::name_any).collect()
}
