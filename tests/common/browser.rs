//! A headless Chromium driven over WebDriver, for the UI's browser tests, the browser
//! benchmark and `hack/screenshots.sh`: `Browser::start()` runs Debian's `chromedriver` on a
//! free loopback port with a fresh, empty profile, opens a session, and `close()` (or drop)
//! tears both down. `hack/tools.sh` installs `chromium` and `chromium-driver`.
//!
//! The flags keep Chromium off the network (this machine's network is closed, and tests must
//! send nothing outside loopback) and make it run as root in a container.

use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use fantoccini::{Client, ClientBuilder};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Chromium's flags: headless, no sandbox (tests run as root), and none of the background
/// connections (updates, sync, QUIC probes) that a closed network refuses.
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
];

/// The programs, from `WEIR_CHROMIUM` / `WEIR_CHROMEDRIVER` or the `PATH`.
fn program(env: &str, names: &[&str]) -> Result<PathBuf, String> {
    if let Ok(path) = std::env::var(env) {
        return Ok(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(format!(
        "{} not found on PATH (nor set in {env}): the browser tests need Debian's chromium and \
         chromium-driver; run hack/tools.sh, or apt-get install chromium chromium-driver",
        names.join(" or ")
    ))
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

static PROFILES: AtomicUsize = AtomicUsize::new(0);

/// A headless Chromium session; the driver (and the browser it started) is killed on drop.
pub struct Browser {
    pub client: Client,
    driver: Child,
    profile: PathBuf,
}

impl Browser {
    /// Starts chromedriver and opens a session. Errors say what is missing.
    pub async fn start() -> Result<Browser, String> {
        let chromium = program("WEIR_CHROMIUM", &["chromium", "chromium-browser"])?;
        let chromedriver = program("WEIR_CHROMEDRIVER", &["chromedriver"])?;
        let profile = std::env::temp_dir().join(format!(
            "weir-chromium-{}-{}",
            std::process::id(),
            PROFILES.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).map_err(|e| format!("creating {}: {e}", profile.display()))?;
        let port = free_port().map_err(|e| format!("finding a free loopback port: {e}"))?;
        let mut driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that drop can kill the browser with it.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", chromedriver.display()))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            if let Ok(Some(status)) = driver.try_wait() {
                return Err(format!("{} exited at start: {status}", chromedriver.display()));
            }
            if Instant::now() > deadline {
                let _ = driver.kill();
                return Err(format!(
                    "{} did not listen on port {port} within 30 s",
                    chromedriver.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "binary": chromium, "args": args }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        match client {
            Ok(client) => Ok(Browser {
                client,
                driver,
                profile,
            }),
            Err(e) => {
                kill_group(&mut driver);
                Err(format!(
                    "opening a session of {} through {}: {e}",
                    chromium.display(),
                    chromedriver.display()
                ))
            }
        }
    }

    /// Writes a PNG of the window to `path` (its directory is created).
    pub async fn screenshot(&self, path: &Path) -> Result<(), String> {
        let png = self
            .client
            .screenshot()
            .await
            .map_err(|e| format!("taking a screenshot: {e}"))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        std::fs::write(path, png).map_err(|e| format!("writing {}: {e}", path.display()))
    }

    /// Ends the session, then the driver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
        drop(self);
    }
}

/// Runs `script` (a function body) in the page and returns what it returned.
pub async fn eval(browser: &Browser, script: &str) -> serde_json::Value {
    browser
        .client
        .execute(script, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("running {script}: {e}"))
}

/// Presses `key` in the element that has the focus, as a keyboard user would.
pub async fn press(browser: &Browser, key: fantoccini::key::Key) {
    let key: char = key.into();
    browser
        .client
        .active_element()
        .await
        .expect("an active element")
        .send_keys(&key.to_string())
        .await
        .expect("typing");
}

fn kill_group(child: &mut Child) {
    // SAFETY: kill(2) with the driver's own process group id: nothing else is in it.
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
    }
    let _ = child.wait();
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// The script the UI serves at `/static/graph.js`.
pub const GRAPH_JS: &str = include_str!("../../src/ui/assets/graph.js");

/// A page as the UI's run view serves one around a graph: `#graph` holding the SVG, and
/// graph.js.
pub fn graph_page(
    title: &str,
    nodes: &[weir::ui::graph::GraphNode],
    edges: &[weir::ui::graph::GraphEdge],
) -> String {
    let title = weir::ui::graph::escape(title);
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <script src=\"/static/graph.js\" defer></script></head>\
         <body><main><h1>{title}</h1><div id=\"graph\">{}</div></main></body></html>",
        weir::ui::graph::render_svg(nodes, edges)
    )
}

/// Serves `html` at `/` and graph.js at `/static/graph.js` on a free loopback port until the
/// test's runtime ends; returns the page's URL.
pub async fn serve(html: String) -> String {
    let app = Router::new()
        .route("/", get(move || async move { Html(html) }))
        .route(
            "/static/graph.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], GRAPH_JS).into_response() }),
        );
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("binding a loopback port");
    let addr = listener.local_addr().expect("a bound address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/")
}
