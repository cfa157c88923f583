//! Names of the objects Weir creates. They are deterministic (so a restarted controller finds
//! what it made before instead of making it twice) and always valid Kubernetes names: when
//! `<parent>-<suffix>` would pass 63 characters, the parent part is cut and a hash of the
//! full name keeps it unique.

use sha2::{Digest, Sha256};

/// Longest name of an object whose name ends up in a label value (Jobs put their name in
/// the `job-name` label of their pods) or a DNS label.
pub const MAX_NAME: usize = 63;

/// Whether `name` is a lowercase RFC 1123 label (what Kubernetes requires of many names).
pub fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Whether `name` is a lowercase RFC 1123 subdomain: what most object names must be.
pub fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// The first 8 hex digits of the SHA-256 of `text`.
pub fn short_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// `<parent>-<suffix>`, shortened to at most 63 characters with a hash of the whole.
pub fn child_name(parent: &str, suffix: &str) -> String {
    let full = format!("{parent}-{suffix}");
    if full.len() <= MAX_NAME {
        return full;
    }
    let hash = short_hash(&full);
    // Keep as much of both parts as fits: `<parent-prefix>-<suffix-prefix>-<hash>`. Each
    // part gets half the room; a part shorter than that leaves the rest to the other one
    // (a short run name and a long task name keep most of the task name).
    let room = MAX_NAME - hash.len() - 2;
    let suffix_keep = suffix.len().min(room - parent.len().min(room / 2));
    let parent_keep = room - suffix_keep;
    let parent_part = parent[..parent.len().min(parent_keep)].trim_end_matches(['-', '.']);
    let suffix_part = suffix[..suffix_keep].trim_end_matches(['-', '.']);
    let mut name = String::with_capacity(MAX_NAME);
    name.push_str(parent_part);
    if !suffix_part.is_empty() {
        name.push('-');
        name.push_str(suffix_part);
    }
    name.push('-');
    name.push_str(&hash);
    name
}

/// The name of a task's TaskRun within a run.
pub fn task_run_name(run: &str, task: &str) -> String {
    child_name(run, task)
}

/// The name of the Job of one attempt of a TaskRun.
pub fn job_name(task_run: &str, attempt: u32) -> String {
    child_name(task_run, &attempt.to_string())
}

/// A label value standing for `name`: the name itself when it fits, else a shortened form
/// with a hash. Selection by exact identity uses the UID labels instead.
pub fn label_value(name: &str) -> String {
    if name.len() <= MAX_NAME {
        return name.to_string();
    }
    let hash = short_hash(name);
    let keep = MAX_NAME - hash.len() - 1;
    format!("{}-{hash}", name[..keep].trim_end_matches(['-', '.']))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_names_are_kept() {
        assert_eq!(task_run_name("etl-1", "extract"), "etl-1-extract");
        assert_eq!(job_name("etl-1-extract", 2), "etl-1-extract-2");
    }

    #[test]
    fn long_names_are_shortened_deterministically() {
        let run = "a".repeat(60);
        let a = task_run_name(&run, "transform");
        assert!(a.len() <= MAX_NAME, "{a}");
        assert_eq!(a, task_run_name(&run, "transform"));
        assert_ne!(a, task_run_name(&run, "transforn"));
        assert!(is_dns_label(&a), "{a}");
    }

    proptest! {
        #[test]
        fn child_names_are_valid_and_distinct(
            parent in "[a-z0-9]([-a-z0-9.]{0,240}[a-z0-9])?",
            s1 in "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?",
            s2 in "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?",
        ) {
            let n1 = child_name(&parent, &s1);
            prop_assert!(n1.len() <= MAX_NAME);
            prop_assert!(!n1.ends_with('-') && !n1.starts_with('-'));
            if s1 != s2 {
                prop_assert_ne!(n1, child_name(&parent, &s2));
            }
        }
    }

    #[test]
    fn a_short_part_leaves_its_room_to_the_other() {
        let task = "a-very-long-task-name-that-says-exactly-what-it-does-and-more";
        let name = task_run_name("etl-1", task);
        // 48 characters of the task name fit; the dash they end on is dropped.
        assert_eq!(name, format!("etl-1-{}-{}", &task[..47], &name[name.len() - 8..]));
        let run = "nightly-warehouse-refresh-2024-05-01t00-00-00z-triggered-by-hand-retry";
        let name = task_run_name(run, "load");
        assert_eq!(name, format!("{}-load-{}", &run[..49], &name[name.len() - 8..]));
        assert!(is_dns_label(&name), "{name}");
    }

    #[test]
    fn job_names_keep_the_attempt_number() {
        let task_run = task_run_name(&"r".repeat(200), &"t".repeat(63));
        assert_eq!(task_run.len(), MAX_NAME);
        let jobs: Vec<String> = (1..=12).map(|n| job_name(&task_run, n)).collect();
        for (n, job) in (1..=12).zip(&jobs) {
            assert!(job.len() <= MAX_NAME && is_dns_label(job), "{job}");
            assert!(job.contains(&format!("-{n}-")), "{job}");
        }
        let distinct: std::collections::HashSet<&String> = jobs.iter().collect();
        assert_eq!(distinct.len(), jobs.len());
    }

    #[test]
    fn label_values_fit() {
        assert_eq!(label_value("short"), "short");
        let long = format!("{}.example", "x".repeat(80));
        let value = label_value(&long);
        assert!(value.len() <= MAX_NAME && !value.ends_with('-'), "{value}");
        assert_eq!(value, label_value(&long));
        assert_ne!(value, label_value(&format!("{long}2")));
    }
}
