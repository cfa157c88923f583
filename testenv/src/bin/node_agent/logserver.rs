//! The slice of the kubelet API that `kubectl logs` needs.
//!
//! `kubectl logs` asks the apiserver, which connects to
//! `https://<node InternalIP>:<status.daemonEndpoints.kubeletEndpoint.port>` and requests
//! `GET /containerLogs/<namespace>/<pod>/<container>?follow=…&tailLines=…&timestamps=…&
//! sinceSeconds=…&sinceTime=…&limitBytes=…`, then copies the response body to the client.
//! The apiserver speaks TLS to kubelets but does not verify their certificate unless it is
//! given `--kubelet-certificate-authority`, so a self-signed certificate is enough.
//!
//! This is a deliberately small HTTP/1.1 server (one GET per connection, chunked response,
//! `Connection: close`) rather than hyper's server: the workspace builds hyper without its
//! `server` feature, and turning that on here would compile a second hyper/kube stack for
//! every test build of Weir.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use jiff::Timestamp;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use super::logfile::{self, LogOptions};
use super::pod::Ctx;

/// How often a follower looks for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

pub fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("log server certificate")?;
    // HTTP/1.1 only: Go's client then does not try HTTP/2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, ctx: Arc<Ctx>) {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!("log server accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    debug!(%peer, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => return,
            };
            if let Err(e) = handle(stream, &ctx).await {
                debug!(%peer, "log request ended: {e}");
            }
        });
    }
}

async fn handle<S>(mut stream: S, ctx: &Ctx) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + AsyncWrite + Unpin,
{
    // Read the request head; a GET has no body worth reading.
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return respond(&mut stream, 431, "request header too large\n").await;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .map_err(|_| std::io::Error::other("timeout reading request"))??;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    debug!(%request_line, "log server request");
    if method != "GET" {
        return respond(&mut stream, 405, "only GET is supported\n").await;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path == "/healthz" {
        return respond(&mut stream, 200, "ok").await;
    }
    let segments: Vec<String> = path
        .strip_prefix("/containerLogs/")
        .map(|rest| rest.split('/').map(percent_decode).collect())
        .unwrap_or_default();
    let [namespace, pod, container] = segments.as_slice() else {
        return respond(
            &mut stream,
            404,
            "not found: this node agent serves only /containerLogs/<ns>/<pod>/<container>\n",
        )
        .await;
    };
    let opts = match parse_options(query) {
        Ok(o) => o,
        Err(msg) => return respond(&mut stream, 400, &msg).await,
    };
    let Some(log) = find_log(&ctx.state_dir, namespace, pod, container) else {
        let msg = format!(
            "no log for container \"{container}\" of pod \"{namespace}/{pod}\" on this node (has it started?)\n"
        );
        return respond(&mut stream, 404, &msg).await;
    };
    stream_log(stream, ctx, &log, opts).await
}

fn parse_options(query: &str) -> Result<LogOptions, String> {
    let mut opts = LogOptions::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        let bad = |what: &str| format!("invalid {k}={v}: {what}\n");
        match k {
            "follow" => opts.follow = v == "true" || v == "1",
            "timestamps" => opts.timestamps = v == "true" || v == "1",
            "tailLines" => opts.tail_lines = Some(v.parse().map_err(|_| bad("not a count"))?),
            "limitBytes" => opts.limit_bytes = Some(v.parse().map_err(|_| bad("not a count"))?),
            "sinceSeconds" => {
                let s: i64 = v.parse().map_err(|_| bad("not a number"))?;
                opts.since = Some(Timestamp::now() - jiff::SignedDuration::from_secs(s));
            }
            "sinceTime" => opts.since = Some(v.parse().map_err(|_| bad("not RFC 3339"))?),
            // `previous` would need restarts, which this agent never does: nothing to show.
            _ => {}
        }
    }
    Ok(opts)
}

/// The log file of the newest pod with this namespace and name: pod directories are named
/// `<namespace>_<pod>_<uid>` (neither name can contain `_`).
fn find_log(state_dir: &Path, namespace: &str, pod: &str, container: &str) -> Option<PathBuf> {
    let prefix = format!("{namespace}_{pod}_");
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(state_dir.join("pods")).ok()?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(&prefix) || name[prefix.len()..].contains('_') {
            continue;
        }
        let log = entry.path().join(format!("{container}.log"));
        if let Ok(meta) = std::fs::metadata(&log) {
            let mtime = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            if best.as_ref().is_none_or(|(t, _)| mtime > *t) {
                best = Some((mtime, log));
            }
        }
    }
    best.map(|(_, p)| p)
}

async fn stream_log<S>(mut stream: S, ctx: &Ctx, log: &Path, opts: LogOptions) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        .await?;
    let mut budget = opts.limit_bytes.unwrap_or(usize::MAX);
    let (initial, mut offset) = logfile::read_initial(log, &opts)?;
    write_chunk(&mut stream, &initial, &mut budget).await?;
    if opts.follow {
        let mut pending: Vec<u8> = Vec::new();
        while budget > 0 {
            let running = ctx.running_logs.lock().unwrap().contains(log);
            // Read what was appended since; complete records only.
            let data = read_from(log, offset)?;
            offset += data.len() as u64;
            pending.extend_from_slice(&data);
            let consumed = pending.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
            let mut out = Vec::new();
            for line in pending[..consumed]
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
            {
                if let Some(rec) = logfile::parse_record(line).filter(|r| logfile::included(r, &opts)) {
                    logfile::render(&rec, &opts, &mut out);
                }
            }
            pending.drain(..consumed);
            write_chunk(&mut stream, &out, &mut budget).await?;
            // `running` was sampled before the read, so nothing written before the container
            // ended can be missed.
            if !running {
                break;
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }
    stream.write_all(b"0\r\n\r\n").await?;
    stream.flush().await?;
    stream.shutdown().await
}

fn read_from(path: &Path, offset: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read as _, Seek as _};
    let mut f = std::fs::File::open(path)?;
    f.seek(std::io::SeekFrom::Start(offset))?;
    let mut data = Vec::new();
    f.read_to_end(&mut data)?;
    Ok(data)
}

async fn write_chunk<S: AsyncWrite + Unpin>(
    stream: &mut S,
    data: &[u8],
    budget: &mut usize,
) -> std::io::Result<()> {
    let data = &data[..data.len().min(*budget)];
    *budget -= data.len();
    if data.is_empty() {
        return Ok(());
    }
    let mut chunk = Vec::with_capacity(data.len() + 16);
    write!(chunk, "{:x}\r\n", data.len())?;
    chunk.extend_from_slice(data);
    chunk.extend_from_slice(b"\r\n");
    stream.write_all(&chunk).await?;
    stream.flush().await
}

async fn respond<S: AsyncWrite + Unpin>(stream: &mut S, code: u16, body: &str) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    };
    let msg = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(msg.as_bytes()).await?;
    stream.flush().await?;
    stream.shutdown().await
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_query_values() {
        assert_eq!(percent_decode("2021-01-01T00%3A00%3A00Z"), "2021-01-01T00:00:00Z");
        assert_eq!(percent_decode("a%2"), "a%2");
        let o = parse_options("follow=true&tailLines=3&limitBytes=10&timestamps=true").unwrap();
        assert!(o.follow && o.timestamps);
        assert_eq!(o.tail_lines, Some(3));
        assert_eq!(o.limit_bytes, Some(10));
        assert!(parse_options("tailLines=x").is_err());
    }
}
