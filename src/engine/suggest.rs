//! "Did you mean ...?": the known name closest to a misspelt one.

/// The known name closest to `wanted` by edit distance (case ignored), if it is close enough
/// to be a typo: at most a third of its length away.
pub fn closest<'a>(wanted: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let wanted_lower = wanted.to_lowercase();
    let wanted_chars = wanted.chars().count();
    let limit = (wanted_chars / 3).max(1);
    known
        // The distance is at least the difference in length: skip the quadratic work for
        // names that cannot be close (pipelines may have thousands of tasks).
        .filter(|k| k.chars().count().abs_diff(wanted_chars) <= limit)
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
}
