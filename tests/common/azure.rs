//! A real Azure Blob Storage server for the artifact tests: Azurite (npm, installed by
//! `hack/tools.sh`), started per test on a free loopback port with its own data directory,
//! its well-known development account, and a container; killed when dropped. It checks
//! Shared Key signatures as Azure does.

use super::s3::tool;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const CONTAINER: &str = "weir-artifacts";
/// Azurite's development account and its published key.
pub const ACCOUNT: &str = "devstoreaccount1";
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub struct Azurite {
    child: Child,
    pub port: u16,
    root: PathBuf,
}

impl Azurite {
    pub fn start(name: &str) -> Azurite {
        let root = std::env::temp_dir().join(format!("weir-azurite-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let out = std::fs::File::create(root.join("azurite.log")).unwrap();
        let child = Command::new(tool("azurite-blob"))
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .args(["--skipApiVersionCheck", "--silent", "--location"])
            .arg(root.join("data"))
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("starting azurite-blob");
        let server = Azurite { child, port, root };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "azurite did not listen on {port}: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server.client(&["create", CONTAINER]);
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("azurite.log")).unwrap_or_default()
    }

    fn client(&self, args: &[&str]) -> String {
        let connection = format!(
            "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};BlobEndpoint={}",
            self.endpoint()
        );
        let out = Command::new(tool("azure-blob"))
            .arg(connection)
            .args(args)
            .output()
            .expect("running azure-blob");
        assert!(
            out.status.success(),
            "azure-blob {args:?}: {}{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Names of the blobs in the container, read through Azure's own client library.
    pub fn blobs(&self) -> Vec<String> {
        self.client(&["list", CONTAINER])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The operator arguments naming this server as the installation's store, with the
    /// account key from the Secret `secret` of the run's namespace.
    pub fn operator_args(&self, secret: &str) -> Vec<String> {
        [
            "--artifact-provider",
            "Azure",
            "--artifact-bucket",
            CONTAINER,
            "--artifact-account",
            ACCOUNT,
            "--artifact-endpoint",
            &self.endpoint(),
            "--artifact-credentials-secret",
            secret,
            "--exec-image",
            "ghcr.io/weir-dev/weir:test",
        ]
        .map(str::to_string)
        .to_vec()
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}
