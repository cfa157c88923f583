//! Pipeline revisions: the content address of a pipeline's spec, and the name of the
//! `PipelineRevision` that holds it. Pure: the operator creates and reads the objects.

use super::names;
use crate::api::PipelineSpec;
use sha2::{Digest, Sha256};

/// Hex digits of the hash kept in a revision's name.
const NAME_HASH: usize = 10;

/// SHA-256 of the spec's JSON, in hex. The JSON of a `PipelineSpec` is deterministic (its
/// fields in declaration order, its maps sorted), so equal specs have equal hashes.
pub fn hash(spec: &PipelineSpec) -> String {
    let json = serde_json::to_vec(spec).unwrap_or_default();
    Sha256::digest(&json).iter().map(|b| format!("{b:02x}")).collect()
}

/// The name of the revision of `hash` for a pipeline (or, with `None`, for a run's inline
/// spec): `<pipeline>-<hash prefix>`, always a valid object name.
pub fn name(pipeline: Option<&str>, hash: &str) -> String {
    names::child_name(pipeline.unwrap_or("inline"), &hash[..hash.len().min(NAME_HASH)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> PipelineSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn equal_specs_share_a_revision_and_a_change_makes_a_new_one() {
        let a = spec(
            serde_json::json!({"tasks": [{"name": "a", "image": "x", "env": [{"name": "B", "value": "1"}]}]}),
        );
        let same = spec(
            serde_json::json!({"tasks": [{"env": [{"value": "1", "name": "B"}], "image": "x", "name": "a"}]}),
        );
        let edited = spec(serde_json::json!({"tasks": [{"name": "a", "image": "y"}]}));
        assert_eq!(
            hash(&a),
            hash(&same),
            "field order in the manifest does not matter"
        );
        assert_ne!(hash(&a), hash(&edited));
        assert_eq!(hash(&a).len(), 64);
        assert_eq!(name(Some("etl"), &hash(&a)), format!("etl-{}", &hash(&a)[..10]));
        assert!(name(None, &hash(&a)).starts_with("inline-"));
    }

    #[test]
    fn names_stay_valid_for_long_pipeline_names() {
        let long = "p".repeat(253);
        let n = name(Some(&long), &"a".repeat(64));
        assert!(names::is_dns_label(&n), "{n}");
        assert_ne!(n, name(Some(&long), &"b".repeat(64)), "the hash keeps them apart");
    }
}
