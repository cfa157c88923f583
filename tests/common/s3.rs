//! A real S3-compatible server for the artifact tests: `s3s-fs` (crates.io, installed by
//! `hack/tools.sh` into `~/.cache/weir/tools/bin`), started per test on a free loopback port
//! with its own data directory, credentials and a bucket; killed when dropped. It checks
//! request signatures, so wrong credentials are refused as they would be by S3.

use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BUCKET: &str = "weir-artifacts";
pub const ACCESS_KEY: &str = "weir-test-access";
pub const SECRET_KEY: &str = "weir-test-secret-key";
/// The Secret holding the store's credentials in a test's namespace.
pub const SECRET: &str = "artifact-store";

pub struct S3Server {
    child: Child,
    pub port: u16,
    /// The server's data directory: `<root>/<bucket>/<key>`.
    pub root: PathBuf,
    log: PathBuf,
}

/// A tool `hack/tools.sh` installs, installing it first if it is not there.
pub fn tool(name: &str) -> PathBuf {
    let tools = std::env::var_os("WEIR_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/weir/tools"));
    let bin = tools.join("bin").join(name);
    if !bin.exists() {
        let status = Command::new(super::repo_root().join("hack/tools.sh"))
            .status()
            .expect("running hack/tools.sh");
        assert!(status.success(), "hack/tools.sh failed");
    }
    bin
}

impl S3Server {
    pub fn start(name: &str) -> S3Server {
        let root = std::env::temp_dir().join(format!("weir-s3-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join(BUCKET)).unwrap();
        let log = root.with_extension("log");
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(tool("s3s-fs"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&root)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("starting s3s-fs");
        let server = S3Server {
            child,
            port,
            root,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not listen on {port}: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Keys of every object under `prefix`, read from the server's data directory.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let bucket = self.root.join(BUCKET);
        let mut keys = Vec::new();
        let mut stack = vec![bucket.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let key = path.strip_prefix(&bucket).unwrap().to_string_lossy().into_owned();
                    // s3s-fs keeps its own bookkeeping files beside the objects.
                    if key.starts_with(prefix) && !key.contains(".s3s-") {
                        keys.push(key);
                    }
                }
            }
        }
        keys.sort();
        keys
    }

    /// The operator arguments naming this server as the installation's store, with
    /// credentials from the Secret `secret` of the run's namespace.
    pub fn operator_args(&self, secret: &str) -> Vec<String> {
        vec![
            "--artifact-bucket".into(),
            BUCKET.into(),
            "--artifact-endpoint".into(),
            self.endpoint(),
            "--artifact-credentials-secret".into(),
            secret.into(),
            "--exec-image".into(),
            "ghcr.io/weir-dev/weir:test".into(),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.root);
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// A namespace with the store's credentials Secret (`secret_key` as its secret key), and an
/// operator using `s3` as the installation's store.
pub async fn setup_with_store(
    prefix: &str,
    s3: &S3Server,
    secret_key: &str,
) -> (weir_testenv::TestNamespace, super::Operator) {
    let credentials = [("accessKeyId", ACCESS_KEY), ("secretAccessKey", secret_key)];
    setup_with_secret(prefix, &credentials, &s3.operator_args(SECRET)).await
}

/// A namespace with the store's credentials Secret holding `credentials`, and an operator
/// started with `args`.
pub async fn setup_with_secret(
    prefix: &str,
    credentials: &[(&str, &str)],
    args: &[String],
) -> (weir_testenv::TestNamespace, super::Operator) {
    let ns = weir_testenv::env().await.namespace(prefix).await;
    super::install_crds(&ns).await;
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(SECRET.into()),
            ..Default::default()
        },
        string_data: Some(
            credentials
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    };
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let op = super::Operator::start_with(&ns, None, &args);
    (ns, op)
}
