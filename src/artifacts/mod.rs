//! Artifacts on object storage (docs/artifacts.md): the store (S3-compatible, GCS, Azure
//! Blob Storage, or a local directory for `weir run`), moving files and directories in and out of it with their
//! SHA-256 digests, and `weir exec`, the wrapper a task's command runs under in its pod.

pub mod exec;

use crate::api::{ArtifactRef, ArtifactStoreSpec, StoreProvider};
use futures::StreamExt as _;
use object_store::buffered::BufWriter;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWriteExt as _;

/// Environment variables carrying a store's credentials into a task's pod (from the store's
/// Secret), read by `weir exec`: the names each provider's own tools use.
pub const ACCESS_KEY_ENV: &str = "AWS_ACCESS_KEY_ID";
pub const SECRET_KEY_ENV: &str = "AWS_SECRET_ACCESS_KEY";
pub const SESSION_TOKEN_ENV: &str = "AWS_SESSION_TOKEN";
pub const GCS_KEY_ENV: &str = "GOOGLE_SERVICE_ACCOUNT_KEY";
pub const AZURE_KEY_ENV: &str = "AZURE_STORAGE_ACCOUNT_KEY";

/// One credential of a provider: the variable it travels in, the key of the store's Secret
/// it comes from, and whether it may be left out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CredentialKey {
    pub env: &'static str,
    pub secret_key: &'static str,
    pub optional: bool,
}

const fn key(env: &'static str, secret_key: &'static str, optional: bool) -> CredentialKey {
    CredentialKey {
        env,
        secret_key,
        optional,
    }
}

/// The credentials of each kind of store.
pub fn credential_keys(provider: StoreProvider) -> &'static [CredentialKey] {
    const S3: [CredentialKey; 3] = [
        key(ACCESS_KEY_ENV, "accessKeyId", false),
        key(SECRET_KEY_ENV, "secretAccessKey", false),
        key(SESSION_TOKEN_ENV, "sessionToken", true),
    ];
    const GCS: [CredentialKey; 1] = [key(GCS_KEY_ENV, "serviceAccountKey", false)];
    const AZURE: [CredentialKey; 1] = [key(AZURE_KEY_ENV, "accountKey", false)];
    match provider {
        StoreProvider::S3 => &S3,
        StoreProvider::GCS => &GCS,
        StoreProvider::Azure => &AZURE,
    }
}

/// Every variable that can carry a credential: `weir exec` removes them all from the
/// environment of the task's command.
pub const CREDENTIAL_ENVS: [&str; 5] = [
    ACCESS_KEY_ENV,
    SECRET_KEY_ENV,
    SESSION_TOKEN_ENV,
    GCS_KEY_ENV,
    AZURE_KEY_ENV,
];

/// Where artifacts are kept, as `weir exec` is told: a bucket, or a local directory (`weir run`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum Location {
    /// An S3-compatible bucket. Credentials are read from the environment, never written here.
    S3 {
        bucket: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<String>,
    },
    /// A Google Cloud Storage bucket; `endpoint` for an emulator.
    Gcs {
        bucket: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
    },
    /// An Azure Blob Storage container of `account`; `endpoint` for Azurite or a private
    /// endpoint.
    Azure {
        container: String,
        account: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
    },
    /// A directory on this machine; keys are paths below it.
    Dir(PathBuf),
}

impl Location {
    pub fn of(spec: &ArtifactStoreSpec) -> Location {
        let bucket = spec.bucket.clone();
        let endpoint = spec.endpoint.clone();
        match spec.provider.unwrap_or_default() {
            StoreProvider::S3 => Location::S3 {
                bucket,
                endpoint,
                region: spec.region.clone(),
            },
            StoreProvider::GCS => Location::Gcs { bucket, endpoint },
            StoreProvider::Azure => Location::Azure {
                container: bucket,
                account: spec.account.clone().unwrap_or_default(),
                endpoint,
            },
        }
    }

    /// The kind of store (a local directory counts as S3: it takes no credentials).
    pub fn provider(&self) -> StoreProvider {
        match self {
            Location::Gcs { .. } => StoreProvider::GCS,
            Location::Azure { .. } => StoreProvider::Azure,
            Location::S3 { .. } | Location::Dir(_) => StoreProvider::S3,
        }
    }

    /// How a person recognises the store in a message (no credentials, never).
    pub fn describe(&self) -> String {
        let at = |e: &Option<String>| e.as_ref().map(|e| format!(" at {e}")).unwrap_or_default();
        match self {
            Location::S3 { bucket, endpoint, .. } => format!("bucket {bucket:?}{}", at(endpoint)),
            Location::Gcs { bucket, endpoint } => format!("GCS bucket {bucket:?}{}", at(endpoint)),
            Location::Azure {
                container,
                account,
                endpoint,
            } => format!(
                "Azure container {container:?} of account {account:?}{}",
                at(endpoint)
            ),
            Location::Dir(dir) => format!("directory {}", dir.display()),
        }
    }
}

/// What went wrong with the store; the message names the object and what the store said.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("artifact store {store}: {message}")]
    Store { store: String, message: String },
    #[error("{0}")]
    Local(String),
    #[error("{what}: digest mismatch: expected sha256 {expected}, got {actual}")]
    Digest {
        what: String,
        expected: String,
        actual: String,
    },
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::Store { .. } => "store",
            Error::Local(_) => "local",
            Error::Digest { .. } => "digest",
        }
    }
}

/// An open store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    location: Location,
}

/// Credentials given explicitly (the operator reading a Secret), by the variable they
/// would travel in; `None` reads those variables from the environment, as `weir exec` does
/// in a pod.
#[derive(Clone, Default)]
pub struct Credentials(pub std::collections::BTreeMap<&'static str, String>);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(..)")
    }
}

/// A credential: given, or from the environment.
fn credential(given: Option<&Credentials>, env: &'static str) -> Option<String> {
    match given {
        Some(c) => c.0.get(env).cloned(),
        None => std::env::var(env).ok(),
    }
    .filter(|v| !v.is_empty())
}

fn retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 3,
        retry_timeout: std::time::Duration::from_secs(30),
        ..Default::default()
    }
}

impl Store {
    pub fn open(location: &Location, credentials: Option<Credentials>) -> Result<Store, Error> {
        let fail = |e: object_store::Error| Error::Store {
            store: location.describe(),
            message: e.to_string(),
        };
        let inner: Arc<dyn ObjectStore> = match location {
            Location::Dir(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::Local(format!("creating {}: {e}", dir.display())))?;
                Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(fail)?)
            }
            Location::S3 {
                bucket,
                endpoint,
                region,
            } => {
                // reqwest's rustls comes without a crypto provider: use ring, as kube does.
                // Installing it twice is harmless.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let mut b = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_region(region.clone().unwrap_or_else(|| "us-east-1".into()))
                    .with_retry(retry());
                if let Some(endpoint) = endpoint {
                    b = b
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"));
                }
                let given = credentials.as_ref();
                if let (Some(id), Some(secret)) = (
                    credential(given, ACCESS_KEY_ENV),
                    credential(given, SECRET_KEY_ENV),
                ) {
                    b = b.with_access_key_id(id).with_secret_access_key(secret);
                    if let Some(t) = credential(given, SESSION_TOKEN_ENV) {
                        b = b.with_token(t);
                    }
                }
                Arc::new(b.build().map_err(fail)?)
            }
            Location::Gcs { bucket, endpoint } => {
                let _ = rustls::crypto::ring::default_provider().install_default();
                let mut b = object_store::gcp::GoogleCloudStorageBuilder::new()
                    .with_bucket_name(bucket)
                    .with_retry(retry());
                if let Some(endpoint) = endpoint {
                    b = b.with_base_url(endpoint).with_client_options(
                        object_store::ClientOptions::new().with_allow_http(endpoint.starts_with("http://")),
                    );
                }
                if let Some(key) = credential(credentials.as_ref(), GCS_KEY_ENV) {
                    b = b.with_service_account_key(key);
                }
                Arc::new(b.build().map_err(fail)?)
            }
            Location::Azure {
                container,
                account,
                endpoint,
            } => {
                let _ = rustls::crypto::ring::default_provider().install_default();
                let mut b = object_store::azure::MicrosoftAzureBuilder::new()
                    .with_account(account)
                    .with_container_name(container)
                    .with_retry(retry());
                if let Some(endpoint) = endpoint {
                    b = b
                        .with_endpoint(endpoint.clone())
                        .with_allow_http(endpoint.starts_with("http://"));
                }
                if let Some(key) = credential(credentials.as_ref(), AZURE_KEY_ENV) {
                    b = b.with_access_key(key);
                }
                Arc::new(b.build().map_err(fail)?)
            }
        };
        Ok(Store {
            inner,
            location: location.clone(),
        })
    }

    fn error(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::Store {
            store: self.location.describe(),
            message: format!("{what}: {}", short(&e.to_string())),
        }
    }

    /// Uploads the file or directory at `path` to `key`, returning where it went, its size
    /// and its digest. A directory's files go under `<key>/files/`, and `<key>/listing.json`
    /// lists them (path, size, digest); the listing's digest is the directory's.
    pub async fn upload(&self, path: &Path, key: &str) -> Result<ArtifactRef, Error> {
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(|e| Error::Local(format!("{}: {e}", path.display())))?;
        if !meta.is_dir() {
            let (size, sha256) = self.put_file(path, key).await?;
            return Ok(ArtifactRef {
                key: key.to_string(),
                size,
                sha256,
                dir: false,
            });
        }
        let mut listing = Vec::new();
        for (relative, file) in walk(path)? {
            let (size, sha256) = self.put_file(&file, &dir_file(key, &relative)).await?;
            listing.push(Entry {
                path: relative,
                size,
                sha256,
            });
        }
        let body = serde_json::to_vec(&listing).map_err(|e| Error::Local(e.to_string()))?;
        let sha256 = hex(&Sha256::digest(&body));
        self.put_bytes(&dir_listing(key), body).await?;
        Ok(ArtifactRef {
            key: key.to_string(),
            size: listing.iter().map(|e| e.size).sum(),
            sha256,
            dir: true,
        })
    }

    /// Downloads an artifact to `path` (creating its parent directories), checking every
    /// digest on the way.
    pub async fn download(&self, artifact: &ArtifactRef, path: &Path) -> Result<(), Error> {
        if !artifact.dir {
            return self.get_file(&artifact.key, &artifact.sha256, path).await;
        }
        let body = self.get_bytes(&dir_listing(&artifact.key)).await?;
        let actual = hex(&Sha256::digest(&body));
        if actual != artifact.sha256 {
            return Err(Error::Digest {
                what: format!("listing of directory {}", artifact.key),
                expected: artifact.sha256.clone(),
                actual,
            });
        }
        let listing: Vec<Entry> = serde_json::from_slice(&body)
            .map_err(|e| Error::Local(format!("listing of directory {}: {e}", artifact.key)))?;
        create_dir(path)?;
        for entry in listing {
            let relative = Path::new(&entry.path);
            if relative.is_absolute()
                || relative
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(Error::Local(format!(
                    "listing of {} names {:?}, outside the directory",
                    artifact.key, entry.path
                )));
            }
            self.get_file(
                &dir_file(&artifact.key, &entry.path),
                &entry.sha256,
                &path.join(relative),
            )
            .await?;
        }
        Ok(())
    }

    pub async fn put_bytes(&self, key: &str, body: Vec<u8>) -> Result<(), Error> {
        self.inner
            .put(&Key::from(key), body.into())
            .await
            .map(drop)
            .map_err(|e| self.error(&format!("writing {key}"), e))
    }

    pub async fn get_bytes(&self, key: &str) -> Result<Vec<u8>, Error> {
        let got = self
            .inner
            .get(&Key::from(key))
            .await
            .map_err(|e| self.error(&format!("reading {key}"), e))?;
        got.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| self.error(&format!("reading {key}"), e))
    }

    /// The bytes of a file artifact (a value moved to the store), its digest checked.
    pub async fn get_checked(&self, artifact: &ArtifactRef) -> Result<Vec<u8>, Error> {
        let body = self.get_bytes(&artifact.key).await?;
        let actual = hex(&Sha256::digest(&body));
        if actual != artifact.sha256 {
            return Err(Error::Digest {
                what: artifact.key.clone(),
                expected: artifact.sha256.clone(),
                actual,
            });
        }
        Ok(body)
    }

    /// Whether `key` exists; `Ok(false)` when the store says it does not.
    pub async fn exists(&self, key: &str) -> Result<bool, Error> {
        match self.inner.head(&Key::from(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.error(&format!("looking up {key}"), e)),
        }
    }

    /// Deletes every object under `prefix`; returns how many there were.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize, Error> {
        let prefix = Key::from(prefix);
        let keys: Vec<Key> = self
            .inner
            .list(Some(&prefix))
            .map(|r| r.map(|m| m.location))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(|e| self.error(&format!("listing {prefix}"), e))?;
        for key in &keys {
            match self.inner.delete(key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.error(&format!("deleting {key}"), e)),
            }
        }
        Ok(keys.len())
    }

    /// Keys under `prefix`, for tests and tools.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, Error> {
        let prefix = Key::from(prefix);
        let found: Vec<_> = self.inner.list(Some(&prefix)).collect().await;
        found
            .into_iter()
            .map(|r| r.map(|m| m.location.to_string()))
            .collect::<Result<_, _>>()
            .map_err(|e| self.error(&format!("listing {prefix}"), e))
    }

    async fn put_file(&self, file: &Path, key: &str) -> Result<(u64, String), Error> {
        let local = |e: std::io::Error| Error::Local(format!("{}: {e}", file.display()));
        let mut reader = tokio::fs::File::open(file).await.map_err(local)?;
        let mut writer = BufWriter::new(self.inner.clone(), Key::from(key));
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = tokio::io::AsyncReadExt::read(&mut reader, &mut buf)
                .await
                .map_err(local)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
            if let Err(e) = writer.write_all(&buf[..n]).await {
                let _ = writer.abort().await;
                return Err(self.error(&format!("writing {key}"), e));
            }
        }
        writer
            .shutdown()
            .await
            .map_err(|e| self.error(&format!("writing {key}"), e))?;
        Ok((size, hex(&hasher.finalize())))
    }

    async fn get_file(&self, key: &str, expected: &str, file: &Path) -> Result<(), Error> {
        let got = self
            .inner
            .get(&Key::from(key))
            .await
            .map_err(|e| self.error(&format!("reading {key}"), e))?;
        if let Some(parent) = file.parent() {
            create_dir(parent)?;
        }
        let local = |e: std::io::Error| Error::Local(format!("{}: {e}", file.display()));
        let mut out = tokio::fs::File::create(file).await.map_err(local)?;
        let mut hasher = Sha256::new();
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.error(&format!("reading {key}"), e))?;
            hasher.update(&chunk);
            out.write_all(&chunk).await.map_err(local)?;
        }
        out.flush().await.map_err(local)?;
        let actual = hex(&hasher.finalize());
        if actual != expected {
            let _ = tokio::fs::remove_file(file).await;
            return Err(Error::Digest {
                what: key.to_string(),
                expected: expected.to_string(),
                actual,
            });
        }
        Ok(())
    }
}

/// Where a directory artifact's listing is kept (beside its files, which a store keeping
/// objects as files could not hold under the key of an object).
fn dir_listing(key: &str) -> String {
    format!("{key}/listing.json")
}

/// Where the file `relative` (with `/`) of a directory artifact is kept.
fn dir_file(key: &str, relative: &str) -> String {
    format!("{key}/files/{relative}")
}

/// One file of a directory artifact's listing.
#[derive(Serialize, Deserialize)]
struct Entry {
    path: String,
    size: u64,
    sha256: String,
}

/// Every regular file below `dir`, as (path relative to `dir` with `/`, full path), sorted.
/// Symbolic links are followed; anything else (sockets, devices) is left out.
fn walk(dir: &Path) -> Result<Vec<(String, PathBuf)>, Error> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| Error::Local(format!("{}: {e}", d.display())))?;
        for entry in entries {
            let path = entry
                .map_err(|e| Error::Local(format!("{}: {e}", d.display())))?
                .path();
            let meta =
                std::fs::metadata(&path).map_err(|e| Error::Local(format!("{}: {e}", path.display())))?;
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let relative = path
                    .strip_prefix(dir)
                    .map_err(|e| Error::Local(e.to_string()))?
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                files.push((relative, path));
            }
        }
    }
    files.sort();
    Ok(files)
}

fn create_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Local(format!("creating {}: {e}", dir.display())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Store errors can carry a whole XML body; a message keeps its first 600 characters.
fn short(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(600) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

/// The credentials of a `provider` store in Secret `name`; an error names the Secret and
/// the key, never a value.
pub async fn read_credentials(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    provider: StoreProvider,
) -> Result<Credentials, String> {
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> = kube::Api::namespaced(client.clone(), namespace);
    let secret = api
        .get_opt(name)
        .await
        .map_err(|e| format!("reading Secret {namespace}/{name}: {e}"))?
        .ok_or_else(|| format!("Secret {namespace}/{name} of the artifact store does not exist"))?;
    let data = secret.data.unwrap_or_default();
    let mut found = Credentials::default();
    for k in credential_keys(provider) {
        match data.get(k.secret_key) {
            Some(v) => {
                found
                    .0
                    .insert(k.env, String::from_utf8_lossy(&v.0).trim().to_string());
            }
            None if k.optional => {}
            None => return Err(format!("Secret {namespace}/{name} has no key {}", k.secret_key)),
        }
    }
    Ok(found)
}

/// Opens the store `spec` names, with the credentials of its Secret in `namespace`.
pub async fn open_spec(
    client: &kube::Client,
    namespace: &str,
    spec: &ArtifactStoreSpec,
) -> Result<Store, String> {
    let credentials = match &spec.credentials_secret {
        Some(name) => {
            Some(read_credentials(client, namespace, name, spec.provider.unwrap_or_default()).await?)
        }
        None => None,
    };
    Store::open(&Location::of(spec), credentials).map_err(|e| e.to_string())
}

/// The stored log of the attempt that Job `job` ran: `Ok(None)` when there is none to look
/// for (the Job is gone, or its task did not run under `weir exec` with a store). The
/// credentials are those of the Secret the task used, read with the caller's own
/// permissions; without permission to read it, the `AWS_*` variables of this process.
pub async fn stored_log(client: &kube::Client, namespace: &str, job: &str) -> Result<Option<String>, String> {
    use k8s_openapi::api::batch::v1::Job;
    let jobs: kube::Api<Job> = kube::Api::namespaced(client.clone(), namespace);
    let Some(job) = jobs
        .get_opt(job)
        .await
        .map_err(|e| format!("reading Job {job}: {e}"))?
    else {
        return Ok(None);
    };
    let Some((plan, secret)) = exec::plan_of_job(&job) else {
        return Ok(None);
    };
    let (Some(location), true) = (plan.store, plan.keep_log) else {
        return Ok(None);
    };
    let credentials = match secret {
        Some(name) => read_credentials(client, namespace, &name, location.provider())
            .await
            .ok(),
        None => None,
    };
    let store = Store::open(&location, credentials).map_err(|e| e.to_string())?;
    let key = format!("{}/{}", plan.prefix, exec::LOG_OBJECT);
    if !store.exists(&key).await.map_err(|e| e.to_string())? {
        return Ok(None);
    }
    let bytes = store.get_bytes(&key).await.map_err(|e| e.to_string())?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weir-artifacts-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn files_and_directories_round_trip_through_a_directory_store() {
        let root = temp("roundtrip");
        let store = Store::open(&Location::Dir(root.join("store")), None).unwrap();
        let src = root.join("src");
        std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
        std::fs::write(src.join("a.txt"), b"alpha").unwrap();
        std::fs::write(src.join("sub/deeper/b.bin"), vec![7u8; 3 << 20]).unwrap();
        let file = store.upload(&src.join("a.txt"), "ns/run/tr/1/one").await.unwrap();
        assert_eq!((file.size, file.dir), (5, false));
        assert_eq!(file.sha256, hex(&Sha256::digest(b"alpha")));
        let dir = store.upload(&src, "ns/run/tr/1/all").await.unwrap();
        assert!(dir.dir);
        assert_eq!(dir.size, 5 + (3 << 20));

        store.download(&file, &root.join("out/one.txt")).await.unwrap();
        assert_eq!(std::fs::read(root.join("out/one.txt")).unwrap(), b"alpha");
        store.download(&dir, &root.join("out/all")).await.unwrap();
        assert_eq!(
            std::fs::read(root.join("out/all/sub/deeper/b.bin")).unwrap(),
            vec![7u8; 3 << 20]
        );

        assert_eq!(store.delete_prefix("ns/run").await.unwrap(), 4);
        assert!(store.list("ns").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_changed_object_fails_its_digest_check() {
        let root = temp("digest");
        let store = Store::open(&Location::Dir(root.join("store")), None).unwrap();
        std::fs::write(root.join("f"), b"original").unwrap();
        let artifact = store.upload(&root.join("f"), "k/f").await.unwrap();
        store.put_bytes("k/f", b"tampered".to_vec()).await.unwrap();
        let e = store.download(&artifact, &root.join("g")).await.unwrap_err();
        assert!(matches!(e, Error::Digest { .. }), "{e}");
        assert!(e.to_string().contains("digest mismatch"), "{e}");
        assert!(
            !root.join("g").exists(),
            "a file that failed its check is not left behind"
        );
    }

    #[tokio::test]
    async fn a_missing_path_is_named() {
        let root = temp("missing");
        let store = Store::open(&Location::Dir(root.join("store")), None).unwrap();
        let e = store.upload(&root.join("nope.pkl"), "k").await.unwrap_err();
        assert!(e.to_string().contains("nope.pkl"), "{e}");
    }
}
