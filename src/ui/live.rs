//! Live updates of a run: server-sent events fed from Kubernetes watches (as the person
//! asking) of the PipelineRun and its TaskRuns. Each change is answered by reading the run
//! again (from the watch cache) and sending its state (`view::LiveState`) when it differs
//! from the last one sent: event `state`, data JSON. A burst of changes is sent once.

use super::auth::User;
use super::error::UiError;
use crate::api::{PipelineRun, TaskRun, labels};
use axum::extract::Path;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{FutureExt as _, Stream, StreamExt as _};
use kube::ResourceExt as _;
use kube::runtime::{WatchStreamExt as _, watcher};
use std::convert::Infallible;
use std::time::Duration;

/// How long changes are gathered before the state is read and sent.
const SETTLE: Duration = Duration::from_millis(200);

pub async fn watch_run(
    user: User,
    Path((ns, run)): Path<(String, String)>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, UiError> {
    let cluster = user.cluster(&ns);
    let first = super::data::snapshot(&cluster, &run).await?;
    let uid = first.run.uid().unwrap_or_default();
    let runs = watcher(
        cluster.api::<PipelineRun>(),
        watcher::Config::default().fields(&format!("metadata.name={run}")),
    )
    .default_backoff()
    .map(|_| ());
    let task_runs = watcher(
        cluster.api::<TaskRun>(),
        watcher::Config::default().labels(&format!("{}={uid}", labels::PIPELINE_RUN_UID)),
    )
    .default_backoff()
    .map(|_| ());
    let changes = futures::stream::select(runs, task_runs).boxed();
    let state = super::view::live_state(&crate::cli::runs::view(&first));
    let initial = serde_json::to_string(&state).unwrap_or_default();
    let start = futures::stream::once(async move {
        Ok::<Event, Infallible>(Event::default().event("state").data(initial))
    });
    let updates = futures::stream::unfold(
        (
            changes,
            cluster,
            run,
            serde_json::to_string(&state).unwrap_or_default(),
        ),
        |(mut changes, cluster, run, mut last)| async move {
            loop {
                changes.next().await?;
                tokio::time::sleep(SETTLE).await;
                while let Some(Some(())) = changes.next().now_or_never() {}
                let Ok(snapshot) = super::data::snapshot(&cluster, &run).await else {
                    continue;
                };
                let state = super::view::live_state(&crate::cli::runs::view(&snapshot));
                let text = serde_json::to_string(&state).unwrap_or_default();
                if text != last {
                    last = text.clone();
                    let event = Event::default().event("state").data(text);
                    return Some((Ok(event), (changes, cluster, run, last)));
                }
            }
        },
    );
    Ok(Sse::new(start.chain(updates)).keep_alive(KeepAlive::default()))
}
