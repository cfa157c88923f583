//! How the cluster subcommands print: `-o text|json|yaml`, times and durations as people
//! read them, colours only on a terminal (and never with `NO_COLOR`), and a block redrawn in
//! place for `--watch`.

use crate::api::TaskPhase;
use jiff::Timestamp;
use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

/// `-o`: what to print.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// For people: a table or a tree.
    #[default]
    Text,
    Json,
    Yaml,
}

/// Prints a value as JSON or YAML.
pub fn print_data(format: Format, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = match format {
        Format::Json => serde_json::to_string_pretty(value)? + "\n",
        Format::Yaml => serde_saphyr::to_string(value)?,
        Format::Text => unreachable!("text is printed by each command"),
    };
    say(text.trim_end());
    Ok(())
}

/// Prints a line; a closed stdout (`weir logs RUN | head`) is not an error worth a message.
pub fn say(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// Whether stdout is a terminal we may redraw and colour.
pub fn is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

pub fn colored() -> bool {
    is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// An instant in the local time zone, to the second.
pub fn time(t: Timestamp) -> String {
    t.to_zoned(jiff::tz::TimeZone::system())
        .strftime("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

/// How long ago, as kubectl says it: `45s`, `12m`, `5h`, `3d`.
pub fn age(t: Timestamp, now: Timestamp) -> String {
    let secs = now.duration_since(t).as_secs().max(0);
    match secs {
        0..120 => format!("{secs}s"),
        120..7_200 => format!("{}m", secs / 60),
        7_200..172_800 => format!("{}h", secs / 3_600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// A duration between two API timestamps, which have whole seconds: `<1s`, `42s`, `3m7s`,
/// `2h5m`.
pub fn duration(d: Duration) -> String {
    match d.as_secs() {
        0 => "<1s".to_string(),
        secs => crate::engine::duration::format(Duration::from_secs(secs)),
    }
}

/// The symbol of a task phase; `frame` turns the spinner of running tasks, `None` draws
/// them still.
pub fn symbol(phase: TaskPhase, frame: Option<usize>) -> &'static str {
    match (phase, frame) {
        (TaskPhase::Running, None) => "●",
        (phase, frame) => crate::local::progress::symbol(phase, frame.unwrap_or(0)),
    }
}

pub fn paint(phase: TaskPhase, text: &str, colored: bool) -> String {
    if colored {
        format!("{}{text}\x1b[0m", crate::local::progress::color(phase))
    } else {
        text.to_string()
    }
}

/// A message on one line: its first line and, when it has more (a log tail after
/// `exit code 3:`), its last, where programs usually say what went wrong.
pub fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    match lines.as_slice() {
        [] => String::new(),
        [one] => one.to_string(),
        [first, .., last] => format!("{first} … {}", last.trim()),
    }
}

/// Cuts `text` to `max` characters, marking the cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Pads the columns of `rows` to line them up (the last column is not padded), two spaces
/// apart, trailing spaces removed. Widths count characters, not bytes.
pub fn table(rows: &[Vec<String>]) -> Vec<String> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(visible_len(cell));
        }
    }
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths[i] - visible_len(cell) + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            line.trim_end().to_string()
        })
        .collect()
}

/// Characters a terminal shows: colour escapes take no room.
fn visible_len(text: &str) -> usize {
    let mut n = 0;
    let mut in_escape = false;
    for c in text.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, _) => n += 1,
        }
    }
    n
}

/// A block of lines redrawn in place on a terminal (`--watch`).
#[derive(Default)]
pub struct Screen {
    drawn: usize,
}

impl Screen {
    /// Replaces the block on screen with `lines`, cut to the terminal's size.
    pub fn draw(&mut self, lines: &[String]) {
        let (width, height) = crate::local::progress::terminal_size().unwrap_or((100, 40));
        let room = height.saturating_sub(1).max(3);
        let mut out = std::io::stdout().lock();
        self.erase(&mut out);
        let shown = if lines.len() > room { room - 1 } else { lines.len() };
        for line in &lines[..shown] {
            let _ = writeln!(out, "{}", cut_visible(line, width.saturating_sub(1)));
        }
        self.drawn = shown;
        if shown < lines.len() {
            let _ = writeln!(
                out,
                "… {} more line(s); make the terminal taller",
                lines.len() - shown
            );
            self.drawn += 1;
        }
        let _ = out.flush();
    }

    /// Removes the block (the final state is printed in full after it).
    pub fn clear(&mut self) {
        let mut out = std::io::stdout().lock();
        self.erase(&mut out);
        let _ = out.flush();
    }

    fn erase(&mut self, out: &mut impl std::io::Write) {
        if self.drawn > 0 {
            let _ = write!(out, "\x1b[{}A\r\x1b[J", self.drawn);
            self.drawn = 0;
        }
    }
}

/// Cuts a line that may hold colour escapes to `max` visible characters.
fn cut_visible(text: &str, max: usize) -> String {
    if visible_len(text) <= max {
        return text.to_string();
    }
    let mut out = String::new();
    let mut n = 0;
    let mut in_escape = false;
    for c in text.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, _) => {
                if n + 1 >= max {
                    out.push('…');
                    out.push_str("\x1b[0m");
                    return out;
                }
                n += 1;
            }
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_line_up_by_visible_width() {
        let rows = vec![
            vec!["NAME".into(), "PHASE".into(), "NOTE".into()],
            vec!["\x1b[32m✓\x1b[0m a".into(), "Succeeded".into(), String::new()],
            vec!["long-name".into(), "Failed".into(), "why".into()],
        ];
        assert_eq!(
            table(&rows),
            [
                "NAME       PHASE      NOTE",
                "\x1b[32m✓\x1b[0m a        Succeeded",
                "long-name  Failed     why"
            ]
        );
    }

    #[test]
    fn ages_read_like_kubectl() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let ago = |s: i64| age(Timestamp::from_second(1_000_000 - s).unwrap(), now);
        assert_eq!(ago(5), "5s");
        assert_eq!(ago(600), "10m");
        assert_eq!(ago(3 * 3600), "3h");
        assert_eq!(ago(3 * 86400), "3d");
    }

    #[test]
    fn messages_keep_their_first_and_last_lines() {
        assert_eq!(one_line(""), "");
        assert_eq!(one_line("exit code 1"), "exit code 1");
        assert_eq!(
            one_line("exit code 3: reading\nparsing\nno exchange rate for JPY\n"),
            "exit code 3: reading … no exchange rate for JPY"
        );
    }

    #[test]
    fn cuts_keep_escapes_whole() {
        assert_eq!(
            cut_visible("\x1b[31m✗\x1b[0m abcdef", 4),
            "\x1b[31m✗\x1b[0m a…\x1b[0m"
        );
        assert_eq!(cut("abcdef", 4), "abc…");
    }
}
