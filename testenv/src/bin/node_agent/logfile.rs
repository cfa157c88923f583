//! Container log files in the CRI format that kubelets read:
//! `<RFC 3339 timestamp> <stdout|stderr> <F|P> <content>\n`, where `F` ends a line of the
//! container's output and `P` is a partial line (a line longer than [`MAX_LINE`], or output
//! that ended without a newline). Keeping the timestamp per line is what makes `timestamps`,
//! `sinceSeconds` and `sinceTime` of `kubectl logs` possible.

use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use tokio::io::{AsyncRead, AsyncReadExt as _};

/// Longest piece of output stored as one record.
const MAX_LINE: usize = 16 * 1024;

/// One parsed record of a log file.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<'a> {
    pub time: &'a str,
    pub stream: &'a str,
    pub full: bool,
    pub content: &'a [u8],
}

pub fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    let tag = parts.next()?;
    let content = parts.next().unwrap_or(b"");
    Some(Record {
        time,
        stream,
        full: tag == b"F",
        content,
    })
}

fn write_record(file: &Mutex<std::fs::File>, stream: &str, full: bool, content: &[u8]) {
    let mut rec = Vec::with_capacity(content.len() + 48);
    // Nanosecond precision, fixed width, so records sort and compare as text too.
    let ts = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.9fZ").to_string();
    rec.extend_from_slice(ts.as_bytes());
    rec.push(b' ');
    rec.extend_from_slice(stream.as_bytes());
    rec.extend_from_slice(if full { b" F " } else { b" P " });
    rec.extend_from_slice(content);
    rec.push(b'\n');
    // One write per record: stdout and stderr copiers share the file and must not interleave
    // inside a record.
    let _ = file.lock().unwrap().write_all(&rec);
}

/// Copies one output stream of a container into the log file until EOF.
pub async fn copy_stream<R: AsyncRead + Unpin>(
    mut reader: R,
    stream: &'static str,
    file: Arc<Mutex<std::fs::File>>,
) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(pos) = pending[start..].iter().position(|&b| b == b'\n') {
            write_record(&file, stream, true, &pending[start..start + pos]);
            start += pos + 1;
        }
        pending.drain(..start);
        while pending.len() >= MAX_LINE {
            write_record(&file, stream, false, &pending[..MAX_LINE]);
            pending.drain(..MAX_LINE);
        }
    }
    if !pending.is_empty() {
        write_record(&file, stream, false, &pending);
    }
}

/// Options of a log request, as the kubelet's `/containerLogs` endpoint takes them.
#[derive(Debug, Default, Clone)]
pub struct LogOptions {
    pub follow: bool,
    pub timestamps: bool,
    pub tail_lines: Option<usize>,
    pub limit_bytes: Option<usize>,
    /// Only records at or after this time.
    pub since: Option<Timestamp>,
}

/// Renders records as `kubectl logs` shows them.
pub fn render(rec: &Record<'_>, opts: &LogOptions, out: &mut Vec<u8>) {
    if opts.timestamps {
        out.extend_from_slice(rec.time.as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(rec.content);
    if rec.full {
        out.push(b'\n');
    }
}

pub fn included(rec: &Record<'_>, opts: &LogOptions) -> bool {
    match (opts.since, rec.time.parse::<Timestamp>()) {
        (Some(since), Ok(t)) => t >= since,
        _ => true,
    }
}

/// Reads the whole log file and renders it, honouring `tailLines`, `since*` and `timestamps`
/// (`limitBytes` is applied by the caller, which may also be following). Returns the rendered
/// bytes and the file offset up to which complete records were consumed.
pub fn read_initial(path: &Path, opts: &LogOptions) -> std::io::Result<(Vec<u8>, u64)> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let consumed = data.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let records: Vec<Record<'_>> = data[..consumed]
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(parse_record)
        .filter(|r| included(r, opts))
        .collect();
    let first = match opts.tail_lines {
        // Count lines of output, not records: a run of partial records plus the full record
        // that ends it is one line, and so is a trailing run of partial records.
        Some(n) => {
            let starts: Vec<usize> = (0..records.len())
                .filter(|&i| i == 0 || records[i - 1].full)
                .collect();
            if n >= starts.len() {
                0
            } else if n == 0 {
                records.len()
            } else {
                starts[starts.len() - n]
            }
        }
        None => 0,
    };
    let mut out = Vec::new();
    for r in &records[first..] {
        render(r, opts, &mut out);
    }
    Ok((out, consumed as u64))
}

/// The last `max_lines` lines of output, at most `max_bytes` bytes (the end is kept): what a
/// kubelet puts in the termination message under `FallbackToLogsOnError`.
pub fn tail_for_message(path: &Path, max_lines: usize, max_bytes: usize) -> String {
    let opts = LogOptions {
        tail_lines: Some(max_lines),
        ..Default::default()
    };
    let Ok((out, _)) = read_initial(path, &opts) else {
        return String::new();
    };
    let start = out.len().saturating_sub(max_bytes);
    String::from_utf8_lossy(&out[start..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records() {
        let r = parse_record(b"2021-01-01T00:00:00.000000000Z stdout F hello world").unwrap();
        assert_eq!(r.stream, "stdout");
        assert!(r.full);
        assert_eq!(r.content, b"hello world");
        let r = parse_record(b"2021-01-01T00:00:00.000000000Z stderr P ").unwrap();
        assert!(!r.full);
        assert_eq!(r.content, b"");
    }

    #[tokio::test]
    async fn copies_and_tails() {
        let dir = std::env::temp_dir().join(format!("weir-logfile-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.log");
        let file = Arc::new(Mutex::new(std::fs::File::create(&path).unwrap()));
        copy_stream(&b"one\ntwo\nthree\npartial"[..], "stdout", file).await;
        let all = read_initial(&path, &LogOptions::default()).unwrap().0;
        assert_eq!(all, b"one\ntwo\nthree\npartial");
        let tail = LogOptions {
            tail_lines: Some(2),
            ..Default::default()
        };
        assert_eq!(read_initial(&path, &tail).unwrap().0, b"three\npartial");
        assert_eq!(tail_for_message(&path, 80, 8), "\npartial");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
