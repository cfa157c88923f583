//! Finished objects leave the operator's memory. A TaskRun that ended, and for which the
//! operator has nothing left to do, gets the label `weir.dev/finished=true` as its last
//! write ([`mark`]); the watches that keep whole TaskRuns select `weir.dev/finished!=true`
//! ([`UNFINISHED`]), so the API server sends them a delete for it and the operator holds no
//! copy of it from then on, nor lists it again when it restarts (issue 14's memory goal: an
//! installation keeps thousands of finished TaskRuns for their history).
//!
//! The one thing that brings a finished TaskRun back to work is a rerun of its task, which
//! the run's controller starts with a patch that also sets the label to `false`
//! ([`unmark_op`]): the TaskRun enters the watch again, as an added object. The label is
//! written under the resourceVersion the decision was taken on, so a rerun that came in
//! between is never marked finished by a stale view (the API server answers 409).

use super::{Result, is_not_found};
use crate::api::labels;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// The label selector of the watches (and lists) that need only objects still at work.
pub const UNFINISHED: &str = "weir.dev/finished!=true";

/// The value of [`labels::FINISHED`] on an object the operator is done with.
const DONE: &str = "true";

/// Whether `obj` carries the finished mark.
pub fn is_marked<K: Resource>(obj: &K) -> bool {
    obj.labels().get(labels::FINISHED).map(String::as_str) == Some(DONE)
}

/// Marks `obj` finished, on the condition that it is still as it was read (its
/// resourceVersion): a conflict or a deleted object means it changed meanwhile, and the
/// change brings the next decision, so neither is an error.
pub async fn mark<K>(api: &Api<K>, obj: &K) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    if is_marked(obj) {
        return Ok(());
    }
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": obj.resource_version(),
            "labels": { labels::FINISHED: DONE },
        },
    });
    match api
        .patch(&obj.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The JSON-patch operation that takes the finished mark off (sets it to `false`, so that
/// it works whether the mark was written yet or not; the object must have labels).
pub fn unmark_op() -> serde_json::Value {
    serde_json::json!({
        "op": "add",
        "path": format!("/metadata/labels/{}", labels::FINISHED.replace('/', "~1")),
        "value": "false",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TaskRun;

    fn labelled(value: Option<&str>) -> TaskRun {
        let mut tr = TaskRun::new("t", Default::default());
        if let Some(v) = value {
            tr.labels_mut().insert(labels::FINISHED.into(), v.into());
        }
        tr
    }

    #[test]
    fn only_the_true_value_marks_an_object_finished() {
        assert!(is_marked(&labelled(Some("true"))));
        assert!(!is_marked(&labelled(Some("false"))));
        assert!(!is_marked(&labelled(None)));
    }

    #[test]
    fn the_selector_and_the_unmark_operation_name_the_label() {
        assert_eq!(UNFINISHED, format!("{}!={DONE}", labels::FINISHED));
        let op = unmark_op();
        assert_eq!(op["path"], "/metadata/labels/weir.dev~1finished");
        assert_eq!(
            op["op"], "add",
            "adds or replaces: the mark may not be written yet"
        );
        assert_ne!(op["value"], DONE);
    }
}
