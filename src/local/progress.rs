//! What `weir run` shows while it runs: one line per task with its state, attempt and
//! elapsed time, redrawn in place on a terminal, or printed as a new line whenever a task
//! changes when the output is a file or a pipe; then a summary table.

use crate::api::TaskPhase;
use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

/// One line of the display: a task, or one instance of a fanned-out task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub label: String,
    pub phase: TaskPhase,
    /// Attempts made so far (0: none).
    pub attempts: u32,
    /// Most attempts the task may make (retry limit + 1).
    pub max_attempts: u32,
    /// Since its first attempt started, until it finished.
    pub elapsed: Option<Duration>,
    /// Why it failed, was skipped, or waits.
    pub detail: Option<String>,
}

/// Durations as a person reads them in a progress display: `0.4s`, `12.3s`, `2m5s`.
pub fn elapsed(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        crate::engine::duration::format(d)
    }
}

/// The symbol of a phase; `frame` turns the spinner of running tasks.
pub fn symbol(phase: TaskPhase, frame: usize) -> &'static str {
    const SPINNER: [&str; 10] = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];
    match phase {
        TaskPhase::Pending => "·",
        TaskPhase::Running => SPINNER[frame % SPINNER.len()],
        TaskPhase::Retrying => "↻",
        TaskPhase::Succeeded => "✓",
        TaskPhase::Failed | TaskPhase::UpstreamFailed => "✗",
        TaskPhase::Skipped => "-",
        TaskPhase::Cancelled => "⊘",
    }
}

/// The terminal colour of a phase (an ANSI escape).
pub fn color(phase: TaskPhase) -> &'static str {
    match phase {
        TaskPhase::Succeeded => "\x1b[32m",
        TaskPhase::Failed | TaskPhase::UpstreamFailed => "\x1b[31m",
        TaskPhase::Running => "\x1b[36m",
        TaskPhase::Retrying | TaskPhase::Cancelled => "\x1b[33m",
        TaskPhase::Pending | TaskPhase::Skipped => "\x1b[2m",
    }
}

const RESET: &str = "\x1b[0m";

fn attempt_text(row: &Row) -> String {
    if row.attempts == 0 {
        String::new()
    } else {
        format!("attempt {}/{}", row.attempts, row.max_attempts)
    }
}

/// One line of the live display (no trailing newline), at most `width` characters wide.
pub fn live_line(row: &Row, label_width: usize, frame: usize, colored: bool, width: usize) -> String {
    let mut text = format!(
        "{:label_width$}  {:14}  {:12}  {:>7}",
        row.label,
        row.phase.as_str(),
        attempt_text(row),
        row.elapsed.map(elapsed).unwrap_or_default()
    );
    if let Some(detail) = &row.detail {
        text.push_str("  ");
        text.push_str(detail.lines().next().unwrap_or_default());
    }
    let text = cut(text.trim_end(), width.saturating_sub(4));
    if colored {
        format!("  {}{}{RESET} {text}", color(row.phase), symbol(row.phase, frame))
    } else {
        format!("  {} {text}", symbol(row.phase, frame))
    }
}

/// Cuts `text` to `max` characters, marking the cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The line printed when a row changes, in plain output.
pub fn plain_line(row: &Row, label_width: usize, since_start: Duration) -> String {
    let mut text = format!(
        "[{:>7}] {:label_width$}  {:14}",
        elapsed(since_start),
        row.label,
        row.phase.as_str()
    );
    let mut parts = vec![attempt_text(row)];
    if row.phase.is_terminal()
        && let Some(d) = row.elapsed
    {
        parts.push(format!("in {}", elapsed(d)));
    }
    if let Some(detail) = &row.detail {
        parts.push(detail.lines().next().unwrap_or_default().to_string());
    }
    for part in parts.iter().filter(|p| !p.is_empty()) {
        text.push_str("  ");
        text.push_str(part);
    }
    text.trim_end().to_string()
}

/// The table printed when the run is over.
pub fn summary_table(rows: &[Row]) -> String {
    let label_width = rows
        .iter()
        .map(|r| r.label.chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    let mut out = format!(
        "{:label_width$}  {:14}  {:8}  {:8}  {}\n",
        "TASK", "STATE", "ATTEMPTS", "DURATION", "DETAIL"
    );
    for row in rows {
        let line = format!(
            "{:label_width$}  {:14}  {:<8}  {:8}  {}",
            row.label,
            row.phase.as_str(),
            row.attempts,
            row.elapsed.map(elapsed).unwrap_or_else(|| "-".into()),
            row.detail
                .as_deref()
                .and_then(|d| d.lines().next())
                .unwrap_or_default()
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The size of the terminal on stdout, if it is one.
pub fn terminal_size() -> Option<(usize, usize)> {
    // SAFETY: TIOCGWINSZ writes a `winsize` into the struct we pass, nothing else.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0 && size.ws_row > 0).then_some((size.ws_col as usize, size.ws_row as usize))
}

/// Writes the display to stdout.
pub struct Progress {
    live: bool,
    colored: bool,
    started: Instant,
    /// Lines of the live block currently on screen.
    drawn: usize,
    frame: usize,
    last_rows: Vec<Row>,
    last_footer: String,
    /// Plain output: what was last printed for each row.
    printed: HashMap<String, (crate::api::TaskPhase, u32)>,
}

impl Progress {
    pub fn new(live: bool, colored: bool) -> Progress {
        Progress {
            live,
            colored,
            started: Instant::now(),
            drawn: 0,
            frame: 0,
            last_rows: Vec::new(),
            last_footer: String::new(),
            printed: HashMap::new(),
        }
    }

    pub fn is_live(&self) -> bool {
        self.live
    }

    fn erase(&mut self, out: &mut impl Write) {
        if self.drawn > 0 {
            let _ = write!(out, "\x1b[{}A\r\x1b[J", self.drawn);
            self.drawn = 0;
        }
    }

    /// Prints a message above the live block (or as is, in plain output).
    pub fn note(&mut self, text: &str) {
        let mut out = std::io::stdout().lock();
        self.erase(&mut out);
        let _ = writeln!(out, "{text}");
        if self.live {
            let rows = std::mem::take(&mut self.last_rows);
            let footer = std::mem::take(&mut self.last_footer);
            self.draw(&mut out, &rows, &footer);
            self.last_rows = rows;
            self.last_footer = footer;
        }
        let _ = out.flush();
    }

    /// Shows the current state: redraws the live block, or prints the rows that changed.
    pub fn update(&mut self, rows: &[Row], footer: &str) {
        let mut out = std::io::stdout().lock();
        if self.live {
            self.frame += 1;
            self.erase(&mut out);
            self.draw(&mut out, rows, footer);
            self.last_rows = rows.to_vec();
            self.last_footer = footer.to_string();
        } else {
            let label_width = label_width(rows);
            let since = self.started.elapsed();
            for row in rows {
                let key = (row.phase, row.attempts);
                if row.phase == TaskPhase::Pending && !self.printed.contains_key(&row.label) {
                    // Waiting is where every task starts: not worth a line.
                    self.printed.insert(row.label.clone(), key);
                    continue;
                }
                if self.printed.get(&row.label) != Some(&key) {
                    self.printed.insert(row.label.clone(), key);
                    let _ = writeln!(out, "{}", plain_line(row, label_width, since));
                }
            }
        }
        let _ = out.flush();
    }

    fn draw(&mut self, out: &mut impl Write, rows: &[Row], footer: &str) {
        let (width, height) = terminal_size().unwrap_or((100, 40));
        let label_width = label_width(rows);
        // A block taller than the screen cannot be redrawn in place: show the tasks that are
        // doing something, then a count of the rest.
        let room = height.saturating_sub(3).max(3);
        let shown: Vec<&Row> = if rows.len() < room {
            rows.iter().collect()
        } else {
            let busy = |r: &&Row| {
                matches!(
                    r.phase,
                    TaskPhase::Running | TaskPhase::Retrying | TaskPhase::Failed
                )
            };
            rows.iter().filter(busy).take(room - 1).collect()
        };
        let mut lines = 0;
        for row in &shown {
            let _ = writeln!(
                out,
                "{}",
                live_line(row, label_width, self.frame, self.colored, width)
            );
            lines += 1;
        }
        let hidden = rows.len() - shown.len();
        let footer = if hidden > 0 {
            format!("  … {hidden} more task(s) not shown; {footer}")
        } else {
            format!("  {footer}")
        };
        let _ = writeln!(out, "{}", cut(&footer, width.saturating_sub(1)));
        self.drawn = lines + 1;
    }

    /// Removes the live block: the summary table follows.
    pub fn finish(&mut self) {
        let mut out = std::io::stdout().lock();
        self.erase(&mut out);
        let _ = out.flush();
    }
}

fn label_width(rows: &[Row]) -> usize {
    rows.iter()
        .map(|r| r.label.chars().count())
        .max()
        .unwrap_or(0)
        .min(40)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(label: &str, phase: TaskPhase, attempts: u32, secs: Option<f64>, detail: Option<&str>) -> Row {
        Row {
            label: label.into(),
            phase,
            attempts,
            max_attempts: 4,
            elapsed: secs.map(Duration::from_secs_f64),
            detail: detail.map(Into::into),
        }
    }

    #[test]
    fn elapsed_reads_well() {
        assert_eq!(elapsed(Duration::from_millis(420)), "0.4s");
        assert_eq!(elapsed(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(elapsed(Duration::from_secs(125)), "2m5s");
    }

    #[test]
    fn lines_show_state_attempt_and_time() {
        let r = row(
            "transform",
            TaskPhase::Retrying,
            1,
            Some(3.0),
            Some("next attempt in 2s"),
        );
        assert_eq!(
            live_line(&r, 10, 0, false, 200),
            "  ↻ transform   Retrying        attempt 1/4      3.0s  next attempt in 2s"
        );
        let r = row("load", TaskPhase::Pending, 0, None, None);
        assert_eq!(live_line(&r, 10, 0, false, 200), "  · load        Pending");
        assert_eq!(live_line(&r, 10, 0, false, 14), "  · load     …");
        let r = row("extract", TaskPhase::Succeeded, 1, Some(0.25), None);
        assert_eq!(
            plain_line(&r, 8, Duration::from_millis(1500)),
            "[   1.5s] extract   Succeeded       attempt 1/4  in 0.2s"
        );
    }

    #[test]
    fn summary_has_one_row_per_task() {
        let rows = vec![
            row("extract", TaskPhase::Succeeded, 1, Some(0.3), None),
            row("load", TaskPhase::UpstreamFailed, 0, None, None),
            row(
                "validate",
                TaskPhase::Failed,
                2,
                Some(61.0),
                Some("Error: exit code 1\nmore"),
            ),
        ];
        assert_eq!(
            summary_table(&rows),
            "\
TASK      STATE           ATTEMPTS  DURATION  DETAIL
extract   Succeeded       1         0.3s
load      UpstreamFailed  0         -
validate  Failed          2         1m1s      Error: exit code 1
"
        );
    }
}
