//! "Did you mean ...?": the known name closest to a misspelt one.

/// Longest name a suggestion is looked for (Kubernetes names and Weir's fields are shorter):
/// the edit distance is quadratic in the length.
pub const MAX_WANTED_CHARS: usize = 100;

/// Most work one suggestion may take, in pairs of characters compared: the candidates past
/// it are not looked at (the suggestion may be missed, the time is bounded).
pub const MAX_WORK: usize = 250_000;

/// The known name closest to `wanted` by edit distance (case ignored), if it is close enough
/// to be a typo: at most a third of its length away. Names longer than [`MAX_WANTED_CHARS`]
/// get none, and the search stops after [`MAX_WORK`].
pub fn closest<'a>(wanted: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let wanted_chars = wanted.chars().count();
    if wanted_chars > MAX_WANTED_CHARS {
        return None;
    }
    let wanted_lower = wanted.to_lowercase();
    let limit = (wanted_chars / 3).max(1);
    let mut work = 0;
    known
        // The distance is at least the difference in length: skip the quadratic work for
        // names that cannot be close (pipelines may have thousands of tasks).
        .filter(|k| k.chars().count().abs_diff(wanted_chars) <= limit)
        .take_while(|k| {
            work += wanted_chars * k.len();
            work <= MAX_WORK
        })
        .map(|k| (edit_distance(&wanted_lower, &k.to_lowercase()), k))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let known = ["extract", "transform", "load"];
        assert_eq!(closest("extrct", known.iter().copied()), Some("extract"));
        assert_eq!(closest("Load", known.iter().copied()), Some("load"));
        assert_eq!(closest("publish", known.iter().copied()), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn long_names_and_long_searches_are_cut_short() {
        let long = "x".repeat(MAX_WANTED_CHARS + 1);
        let near = format!("{long}y");
        assert_eq!(closest(&long, [near.as_str()].into_iter()), None);
        // 20,000 candidates of 21 characters: only the first 595 are compared.
        let many: Vec<String> = (0..20_000).map(|i| format!("task-number-{i:09}")).collect();
        assert_eq!(
            closest("task-numbr-000000500", many.iter().map(String::as_str)),
            Some("task-number-000000500")
        );
        let found = closest("Task-Number-000019999", many.iter().map(String::as_str));
        assert_ne!(
            found,
            Some("task-number-000019999"),
            "the search stops before the last"
        );
    }
}
