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

/// How long changes of a list are gathered before the page is told: a list page reads
/// much more than a run's state, so less often.
const LIST_SETTLE: Duration = Duration::from_secs(1);

/// Changes to the objects of a list: created, changed or deleted (not the initial listing
/// of a watch, nor its relisting after a reconnect).
fn changes_of<K>(api: kube::Api<K>, config: watcher::Config) -> futures::stream::BoxStream<'static, ()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(api, config)
        .default_backoff()
        .filter_map(|event| async move {
            match event {
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => Some(()),
                _ => None,
            }
        })
        .boxed()
}

/// An event `changed` after each burst of changes: the page reads itself again and
/// replaces its live regions.
fn changed_events(
    changes: futures::stream::BoxStream<'static, ()>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = futures::stream::unfold(changes, |mut changes| async move {
        changes.next().await?;
        tokio::time::sleep(LIST_SETTLE).await;
        while let Some(Some(())) = changes.next().now_or_never() {}
        Some((Ok(Event::default().event("changed").data("")), changes))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// The pipelines page's stream: its namespace's Pipelines and PipelineRuns.
pub async fn watch_namespace(
    user: User,
    Path(ns): Path<String>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let cluster = user.cluster(&ns);
    let pipelines = changes_of(cluster.api::<crate::api::Pipeline>(), watcher::Config::default());
    let runs = changes_of(cluster.api::<PipelineRun>(), watcher::Config::default());
    changed_events(futures::stream::select(pipelines, runs).boxed())
}

/// The grid's stream: one pipeline's PipelineRuns and TaskRuns.
pub async fn watch_pipeline(
    user: User,
    Path((ns, name)): Path<(String, String)>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let cluster = user.cluster(&ns);
    let selector = super::data::runs_selector(Some(&name), None);
    let runs = changes_of(
        cluster.api::<PipelineRun>(),
        watcher::Config::default().labels(&selector),
    );
    let task_runs = changes_of(
        cluster.api::<TaskRun>(),
        watcher::Config::default().labels(&selector),
    );
    changed_events(futures::stream::select(runs, task_runs).boxed())
}
