//! What a message quotes of what a user wrote, shortened: a message names the value it is
//! about, but one that repeats a 4 MiB string (or a whole list) is no longer read, so long
//! text is cut in the middle, with its length said.

use serde_json::Value;
use std::fmt;

/// Characters of a value quoted whole; longer values keep their start and end.
pub const MAX_QUOTED: usize = 80;

/// `text` as a message shows it: in quotes and escaped like `{:?}`, and when longer than
/// [`MAX_QUOTED`] characters, its start and end with `…` between and its length after.
pub fn q(text: &str) -> Quoted<'_> {
    Quoted(text)
}

/// See [`q`].
pub struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        let chars = text.chars().count();
        if chars <= MAX_QUOTED {
            return write!(f, "{text:?}");
        }
        let head: String = text.chars().take(MAX_QUOTED / 2).collect();
        let tail: String = text.chars().skip(chars - MAX_QUOTED / 4).collect();
        let quoted = |s: &str| {
            let q = format!("{s:?}");
            q[1..q.len() - 1].to_string()
        };
        write!(f, "\"{}…{}\" ({chars} characters)", quoted(&head), quoted(&tail))
    }
}

/// `1st`, `2nd`, `3rd`, `11th`, ...: a place in a line.
pub fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// `text` shortened like [`q`] but without quotes, for text shown inside other syntax (a
/// field path, a `{{ ... }}` reference).
pub fn cut(text: &str) -> String {
    let chars = text.chars().count();
    if chars <= MAX_QUOTED {
        return text.to_string();
    }
    let head: String = text.chars().take(MAX_QUOTED / 2).collect();
    let tail: String = text.chars().skip(chars - MAX_QUOTED / 4).collect();
    format!("{head}…{tail} ({chars} characters)")
}

/// A JSON value as a message shows it: compact JSON, cut after [`MAX_QUOTED`] characters
/// with its length said.
pub fn json(value: &Value) -> String {
    let text = value.to_string();
    let chars = text.chars().count();
    if chars <= MAX_QUOTED {
        return text;
    }
    let head: String = text.chars().take(MAX_QUOTED).collect();
    format!("{head}… ({chars} characters of JSON)")
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut (for fields
/// with a size limit, such as a status message).
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_quoted_whole() {
        assert_eq!(q("5d").to_string(), "\"5d\"");
        assert_eq!(q("a\"b\n").to_string(), format!("{:?}", "a\"b\n"));
        let exactly = "é".repeat(MAX_QUOTED);
        assert_eq!(q(&exactly).to_string(), format!("{exactly:?}"));
    }

    #[test]
    fn long_text_keeps_its_ends_and_says_its_length() {
        let long = format!("start{}end\n", "x".repeat(1 << 20));
        let shown = q(&long).to_string();
        assert!(shown.starts_with("\"startxxx"), "{shown}");
        assert!(
            shown.contains("…") && shown.ends_with("xend\\n\" (1048585 characters)"),
            "{shown}"
        );
        assert!(shown.len() < 2 * MAX_QUOTED, "{shown}");
    }

    #[test]
    fn cut_shortens_without_quotes() {
        assert_eq!(cut("tasks"), "tasks");
        let long = "k".repeat(1000);
        assert_eq!(
            cut(&long),
            format!("{}…{} (1000 characters)", "k".repeat(40), "k".repeat(20))
        );
    }

    #[test]
    fn long_json_is_cut() {
        assert_eq!(json(&serde_json::json!({"a": [1, 2]})), r#"{"a":[1,2]}"#);
        let big = serde_json::json!(vec!["lol"; 1000]);
        let shown = json(&big);
        assert!(
            shown.starts_with(r#"["lol","lol""#) && shown.ends_with("(6001 characters of JSON)"),
            "{shown}"
        );
    }
}
