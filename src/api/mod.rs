//! The custom resources of group `weir.dev`, version `v1alpha1`.
//!
//! Every public item carries a doc comment: it becomes the field description users read in
//! `kubectl explain`. Constraints that the API server can check (patterns, enums, minimums)
//! live in the schema; everything else is checked by `engine::validate`, which the operator,
//! the CLI and (later) the admission webhook share.

pub mod approval;
pub mod artifact;
pub mod asset;
pub mod condition;
pub mod deadline;
pub mod notify;
pub mod params;
pub mod pipeline;
pub mod pipelinerun;
pub mod pool;
pub mod revision;
pub mod schedule;
pub mod task;
pub mod taskrun;
pub mod wait;

pub use approval::{Approval, ApprovalGate, ApprovalRecord, ApprovalSpec, Decision, IgnoredApproval};
pub use artifact::{
    ArtifactInput, ArtifactRef, ArtifactSpec, ArtifactStoreSpec, ResolvedInput, StoreProvider,
};
pub use asset::{
    Asset, AssetEvent, AssetSequence, AssetSpec, AssetStatus, AssetTrigger, HttpTrigger, ProducedAsset,
};
pub use condition::{ConditionStatus, actions, condition_types, reasons, set_condition};
pub use deadline::{Deadline, DeadlineFrom, DeadlineMiss, MissedDeadline, OnMiss};
pub use notify::{
    DeliveryState, EmailTarget, Notification, NotificationRecord, NotifyEvent, SecretKeyRef, SmtpServer,
    SmtpTls, WebhookTarget,
};
pub use params::{ForEach, OutputSpec, ParamSpec, ParamType, WhenCondition, WhenOperator};
pub use pipeline::{Pipeline, PipelineSpec, PipelineStatus};
pub use pipelinerun::{
    AppliedRerun, PipelineRef, PipelineRun, PipelineRunSpec, PipelineRunStatus, RefusedTaskRun, RerunRequest,
    RunPhase, TaskCounts, TaskSummary,
};
pub use pool::{Pool, PoolHolder, PoolSpec, PoolStatus, QueuedTask};
pub use revision::{PipelineRevision, PipelineRevisionSpec};
pub use schedule::{ConcurrencyPolicy, Schedule, Trigger};
pub use task::{
    FailureReason, PodTemplate, RetryOn, RetryPolicy, TaskDefaults, TaskPhase, TaskSpec, TriggerRule,
    WeightRule,
};
pub use taskrun::{Attempt, AttemptPhase, PodReplacements, TaskRun, TaskRunSpec, TaskRunStatus};
pub use wait::WaitSpec;

/// The API group of every Weir resource.
pub const GROUP: &str = "weir.dev";
/// The API version of every Weir resource.
pub const VERSION: &str = "v1alpha1";

/// Labels Weir puts on the objects it creates, so people and tools can select them.
pub mod labels {
    /// Name of the Pipeline a run was made from (shortened to a valid label value).
    pub const PIPELINE: &str = "weir.dev/pipeline";
    /// Name of the PipelineRun an object belongs to (shortened to a valid label value).
    pub const PIPELINE_RUN: &str = "weir.dev/pipelinerun";
    /// UID of the owning PipelineRun: exact, always a valid label value.
    pub const PIPELINE_RUN_UID: &str = "weir.dev/pipelinerun-uid";
    /// Name of the task within its pipeline.
    pub const TASK: &str = "weir.dev/task";
    /// Name of the TaskRun a Job belongs to (shortened to a valid label value).
    pub const TASK_RUN: &str = "weir.dev/taskrun";
    /// UID of the owning TaskRun: exact, always a valid label value.
    pub const TASK_RUN_UID: &str = "weir.dev/taskrun-uid";
    /// Index of an instance of a fanned-out task.
    pub const INSTANCE: &str = "weir.dev/instance";
    /// Attempt number of a Job (1 for the first try).
    pub const ATTEMPT: &str = "weir.dev/attempt";
    /// What created a PipelineRun: `schedule`, `manual` (`weir trigger`), `backfill` or
    /// `asset` (an update of an asset in the pipeline's `spec.assets`) or `http` (the HTTP
    /// trigger endpoint).
    pub const TRIGGER: &str = "weir.dev/trigger";
    /// On Jobs, for Kueue: the LocalQueue named by `podTemplate.kueueQueueName`.
    pub const KUEUE_QUEUE_NAME: &str = "kueue.x-k8s.io/queue-name";
    /// On TaskRuns: `true` once the task ended and the operator has nothing left to do for
    /// it (its last write); a rerun of the task sets it to `false`. The operator's watches
    /// leave such TaskRuns out, so it keeps none of them in memory.
    /// `kubectl get taskruns -l weir.dev/finished!=true` lists those still at work.
    pub const FINISHED: &str = "weir.dev/finished";
    /// Marks every object managed by Weir.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// Value of [`MANAGED_BY`].
    pub const MANAGED_BY_VALUE: &str = "weir";
}

/// Annotations Weir puts on the objects it creates. Unlike labels they hold names in full
/// (label values are capped at 63 characters, object names are not).
pub mod annotations {
    /// On TaskRuns: the name of their PipelineRun.
    pub const PIPELINE_RUN: &str = "weir.dev/pipelinerun";
    /// On Jobs and pods: the name of their TaskRun.
    pub const TASK_RUN: &str = "weir.dev/taskrun";
    /// On TaskRuns selected by a rerun request and waiting for their turn to run again: the
    /// request. Set and removed by the operator only.
    pub const RERUN: &str = "weir.dev/rerun";
    /// On asset-triggered runs: the sequence numbers of the asset events the run consumed
    /// (JSON), so that a Pipeline whose status write was lost records them from the run.
    pub const CONSUMED_ASSETS: &str = "weir.dev/consumed-assets";
}
