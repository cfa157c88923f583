//! `weir exec -- CMD ...`: what runs as a task's entrypoint when the task moves artifacts
//! (Argo's emissary pattern). It downloads the inputs (digests checked), runs the command
//! with signals passed through and its exit code kept, uploads the declared artifacts and
//! writes the result (the task's outputs plus where each artifact went) as the container's
//! termination message. The image is the user's, so this binary brings everything it needs:
//! an init container copies it into a volume shared with the task's container.

use super::{Location, Store};
use crate::api::{ArtifactRef, ArtifactSpec, ResolvedInput, artifact};
use crate::engine::outputs;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::{AsyncRead, AsyncWriteExt as _};

/// Environment variable holding the [`Plan`] as JSON.
pub const PLAN_ENV: &str = "WEIR_EXEC_PLAN";
/// Exit code of an attempt that `weir exec` itself failed (the store refused, a digest did
/// not match, a declared path is missing); its termination message starts with
/// [`FAILURE_PREFIX`]. The operator records such attempts with reason `ArtifactError`.
pub const FAILURE_EXIT_CODE: i32 = 86;
pub const FAILURE_PREFIX: &str = "weir exec: ";
/// Name of the object holding an attempt's log, under the attempt's prefix.
pub const LOG_OBJECT: &str = "log";

/// What `weir exec` is to do, worked out by the operator (or `weir run`) for one attempt.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The store; `None` when neither the installation nor the pipeline names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<Location>,
    /// Key prefix of this attempt's objects ([`artifact::attempt_prefix`]).
    pub prefix: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<ResolvedInput>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactSpec>,
    /// Where the result goes: the container's termination message path.
    pub result: String,
    /// A writable directory of this attempt (the shared volume): the command's outputs file
    /// and the log are kept there.
    pub work_dir: String,
    /// Store the command's output (stdout and stderr) as `<prefix>/log`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_log: bool,
}

/// Runs the command of `argv` under `plan`; returns the exit code to exit with.
pub async fn run(plan: &Plan, argv: &[String]) -> i32 {
    match run_inner(plan, argv).await {
        Ok(code) => code,
        Err(message) => {
            let message = format!("{FAILURE_PREFIX}{message}");
            eprintln!("{message}");
            // Best effort: if even this fails, the log tail becomes the message.
            let _ = std::fs::write(&plan.result, &message);
            FAILURE_EXIT_CODE
        }
    }
}

async fn run_inner(plan: &Plan, argv: &[String]) -> Result<i32, String> {
    let (program, args) = argv
        .split_first()
        .ok_or("no command to run: weir exec -- COMMAND [ARGS...]")?;
    let needs_store = !plan.inputs.is_empty() || !plan.artifacts.is_empty() || plan.keep_log;
    let store = match &plan.store {
        Some(location) => Some(Store::open(location, None).map_err(|e| e.to_string())?),
        None if needs_store => {
            return Err(
                "no artifact store is configured: set the operator's --artifact-bucket (the chart's \
                 artifacts.bucket) or the pipeline's spec.artifactStore"
                    .into(),
            );
        }
        None => None,
    };
    let work = PathBuf::from(&plan.work_dir);
    std::fs::create_dir_all(&work).map_err(|e| format!("creating {}: {e}", work.display()))?;
    if let Some(store) = &store {
        download_inputs(store, &plan.inputs).await?;
    }
    let outputs_file = work.join("outputs");
    std::fs::write(&outputs_file, b"").map_err(|e| format!("creating {}: {e}", outputs_file.display()))?;
    let log_file = plan.keep_log.then(|| work.join("log"));
    let code = run_command(program, args, &outputs_file, log_file.as_deref()).await?;
    if let (Some(store), Some(log)) = (&store, &log_file) {
        let key = format!("{}/{LOG_OBJECT}", plan.prefix);
        if let Err(e) = store.upload(log, &key).await {
            eprintln!("{FAILURE_PREFIX}the log was not stored: {e}");
        }
    }
    let written = std::fs::read_to_string(&outputs_file).unwrap_or_default();
    if code != 0 {
        // What the task wrote explains its failure, as without weir exec.
        let _ = std::fs::write(&plan.result, written);
        return Ok(code);
    }
    let mut uploaded = Vec::new();
    if let Some(store) = &store {
        for a in &plan.artifacts {
            let key = format!("{}/{}", plan.prefix, a.name);
            let path = Path::new(&a.path);
            if !path.exists() {
                return Err(format!(
                    "artifact {} : nothing at {} when the command ended",
                    a.name, a.path
                ));
            }
            let r = store
                .upload(path, &key)
                .await
                .map_err(|e| format!("uploading artifact {}: {e}", a.name))?;
            uploaded.push((a.name.clone(), r));
        }
    }
    let result = match outputs::parse_within(&written, &[], outputs::MAX_LARGE_BYTES) {
        Ok(map) => {
            let map = with_references(map, &uploaded)?;
            let map = move_large_values(store.as_ref(), plan, map).await?;
            result_text(&map)?
        }
        Err(problem) if written.len() >= outputs::MAX_BYTES => return Err(problem),
        // Outputs that do not parse are passed on as written, for the operator to report
        // as it always does.
        Err(_) => written,
    };
    std::fs::write(&plan.result, result)
        .map_err(|e| format!("writing the result to {}: {e}", plan.result))?;
    Ok(0)
}

/// The task's outputs with an entry per artifact.
fn with_references(
    mut map: BTreeMap<String, String>,
    uploaded: &[(String, ArtifactRef)],
) -> Result<BTreeMap<String, String>, String> {
    for (name, r) in uploaded {
        let json = serde_json::to_string(r).map_err(|e| e.to_string())?;
        map.insert(artifact::output_key(name), json);
    }
    Ok(map)
}

/// Room a reference to a moved value takes in the result, at most (object key, size,
/// digest, as JSON).
const REFERENCE_BYTES: usize = 512;

/// Outputs too large for a termination message: the largest values go to the store, as
/// `<prefix>/outputs/<key>`, and a reference (object key, size, digest) takes their place
/// under [`outputs::large_key`].
async fn move_large_values(
    store: Option<&Store>,
    plan: &Plan,
    mut map: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    let budget = outputs::MAX_BYTES - 1;
    let moves = outputs::to_move(&map, REFERENCE_BYTES, budget).ok_or_else(|| {
        format!(
            "the outputs come to more than a termination message holds ({} bytes) in {} values, none \
             of them large: write fewer values",
            outputs::MAX_BYTES,
            map.len()
        )
    })?;
    if moves.is_empty() {
        return Ok(map);
    }
    let Some(store) = store else {
        return Err(format!(
            "the outputs come to more than a termination message holds ({} bytes), and no artifact \
             store is configured to take the large values: set the operator's --artifact-bucket (the \
             chart's artifacts.bucket) or the pipeline's spec.artifactStore",
            outputs::MAX_BYTES
        ));
    };
    let dir = Path::new(&plan.work_dir).join("large-outputs");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    for key in moves {
        let value = map.remove(&key).unwrap_or_default();
        let file = dir.join(&key);
        std::fs::write(&file, value).map_err(|e| format!("writing {}: {e}", file.display()))?;
        let r = store
            .upload(&file, &format!("{}/outputs/{key}", plan.prefix))
            .await
            .map_err(|e| format!("moving output {key} to the store: {e}"))?;
        let json = serde_json::to_string(&r).map_err(|e| e.to_string())?;
        map.insert(outputs::large_key(&key), json);
    }
    Ok(map)
}

/// The termination message: the outputs as JSON, refused when they would not fit.
fn result_text(map: &BTreeMap<String, String>) -> Result<String, String> {
    let text = serde_json::to_string(map).map_err(|e| e.to_string())?;
    if text.len() >= outputs::MAX_BYTES {
        return Err(format!(
            "the outputs and artifact references come to {} bytes, more than a termination message \
             holds ({} bytes): write fewer or shorter outputs",
            text.len(),
            outputs::MAX_BYTES
        ));
    }
    Ok(text)
}

async fn download_inputs(store: &Store, inputs: &[ResolvedInput]) -> Result<(), String> {
    for input in inputs {
        let target = Path::new(&input.path);
        for (i, r) in input.artifacts.iter().enumerate() {
            let path = if input.fan_in {
                target.join(i.to_string())
            } else {
                target.to_path_buf()
            };
            store
                .download(r, &path)
                .await
                .map_err(|e| format!("input {} ({}): {e}", input.from, input.path))?;
        }
        if input.fan_in && input.artifacts.is_empty() {
            std::fs::create_dir_all(target).map_err(|e| format!("creating {}: {e}", target.display()))?;
        }
    }
    Ok(())
}

/// Runs the command with `WEIR_OUTPUTS` pointing at `outputs_file`, the store's
/// credentials taken out of its environment, and the signals a container gets passed on;
/// with `log`, its output is copied there as well. Returns its exit code (128 + the signal
/// that ended it, as a shell reports).
async fn run_command(
    program: &str,
    args: &[String],
    outputs_file: &Path,
    log: Option<&Path>,
) -> Result<i32, String> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env(outputs::OUTPUTS_ENV, outputs_file)
        .env_remove(PLAN_ENV);
    for credential in super::CREDENTIAL_ENVS {
        cmd.env_remove(credential);
    }
    if log.is_some() {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let mut child = cmd.spawn().map_err(|e| format!("starting {program:?}: {e}"))?;
    let copiers = match log {
        Some(path) => {
            let file = tokio::fs::File::create(path)
                .await
                .map_err(|e| format!("creating {}: {e}", path.display()))?;
            let file = std::sync::Arc::new(tokio::sync::Mutex::new(file));
            let out = child
                .stdout
                .take()
                .map(|s| tokio::spawn(tee(s, false, file.clone())));
            let err = child
                .stderr
                .take()
                .map(|s| tokio::spawn(tee(s, true, file.clone())));
            vec![out, err]
        }
        None => Vec::new(),
    };
    let pid = child.id().map(|p| p as i32);
    let status = forward_signals_until_exit(&mut child, pid).await?;
    for c in copiers.into_iter().flatten() {
        let _ = c.await;
    }
    use std::os::unix::process::ExitStatusExt as _;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

async fn forward_signals_until_exit(
    child: &mut tokio::process::Child,
    pid: Option<i32>,
) -> Result<std::process::ExitStatus, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let kinds = [
        SignalKind::terminate(),
        SignalKind::interrupt(),
        SignalKind::hangup(),
        SignalKind::quit(),
        SignalKind::user_defined1(),
        SignalKind::user_defined2(),
    ];
    let mut streams = Vec::new();
    for kind in kinds {
        let s = signal(kind).map_err(|e| format!("listening for signals: {e}"))?;
        streams.push((kind.as_raw_value(), s));
    }
    loop {
        let any_signal = futures::future::select_all(streams.iter_mut().map(|(n, s)| {
            let n = *n;
            Box::pin(async move {
                s.recv().await;
                n
            })
        }));
        tokio::select! {
            status = child.wait() => return status.map_err(|e| format!("waiting for the command: {e}")),
            (sig, _, _) = any_signal => {
                if let Some(pid) = pid {
                    // SAFETY: a plain kill(2) of our own child.
                    unsafe { libc::kill(pid, sig) };
                }
            }
        }
    }
}

/// Copies what the command writes to this process's stdout (or stderr) and to the log file.
async fn tee<R>(mut from: R, to_stderr: bool, file: std::sync::Arc<tokio::sync::Mutex<tokio::fs::File>>)
where
    R: AsyncRead + Unpin,
{
    use std::io::Write as _;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match tokio::io::AsyncReadExt::read(&mut from, &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let _ = if to_stderr {
            std::io::stderr().write_all(&buf[..n])
        } else {
            let mut out = std::io::stdout().lock();
            out.write_all(&buf[..n]).and_then(|()| out.flush())
        };
        let _ = file.lock().await.write_all(&buf[..n]).await;
    }
    let _ = file.lock().await.flush().await;
}

/// `weir exec-install DEST`: copies this executable to `DEST` (the init container's job).
pub fn install(dest: &Path) -> Result<(), String> {
    let me = std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?;
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    std::fs::copy(&me, dest).map_err(|e| format!("copying {} to {}: {e}", me.display(), dest.display()))?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("making {} executable: {e}", dest.display()))?;
    Ok(())
}

/// The plan of an attempt's Job, if its task runs under `weir exec`, with the name of the
/// Secret holding the store's credentials (what `weir logs` and the UI need to read the
/// attempt's stored log once its pod is gone).
pub fn plan_of_job(job: &k8s_openapi::api::batch::v1::Job) -> Option<(Plan, Option<String>)> {
    let pod = job.spec.as_ref()?.template.spec.as_ref()?;
    let env = pod.containers.first()?.env.as_ref()?;
    let plan = env
        .iter()
        .find(|v| v.name == PLAN_ENV)
        .and_then(|v| serde_json::from_str(v.value.as_deref()?).ok())?;
    let secret = env
        .iter()
        .find(|v| super::CREDENTIAL_ENVS.contains(&v.name.as_str()))
        .and_then(|v| Some(v.value_from.as_ref()?.secret_key_ref.as_ref()?.name.clone()));
    Some((plan, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weir-exec-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn plan(dir: &Path) -> Plan {
        Plan {
            store: Some(Location::Dir(dir.join("store"))),
            prefix: "ns/run/run-a/1".into(),
            result: dir.join("result").to_string_lossy().into_owned(),
            work_dir: dir.join("work").to_string_lossy().into_owned(),
            ..Plan::default()
        }
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn outputs_and_artifacts_reach_the_result_and_the_next_task() {
        let dir = temp("flow");
        let mut producer = plan(&dir);
        producer.artifacts = vec![ArtifactSpec {
            name: "model".into(),
            path: dir.join("out/model.pkl").to_string_lossy().into_owned(),
        }];
        producer.keep_log = true;
        let script = format!(
            "mkdir -p {0}/out && printf weights > {0}/out/model.pkl && echo accuracy=0.93 > $WEIR_OUTPUTS && echo trained",
            dir.display()
        );
        assert_eq!(run(&producer, &sh(&script)).await, 0);
        let result: std::collections::BTreeMap<String, String> =
            serde_json::from_str(&std::fs::read_to_string(&producer.result).unwrap()).unwrap();
        assert_eq!(result["accuracy"], "0.93");
        let model: ArtifactRef = serde_json::from_str(&result[&artifact::output_key("model")]).unwrap();
        assert_eq!((model.key.as_str(), model.size), ("ns/run/run-a/1/model", 7));
        let log = std::fs::read_to_string(dir.join("store/ns/run/run-a/1/log")).unwrap();
        assert_eq!(log, "trained\n");

        let mut consumer = plan(&dir);
        consumer.prefix = "ns/run/run-b/1".into();
        let input = dir.join("in/model.pkl");
        consumer.inputs = vec![ResolvedInput {
            from: "tasks.a.artifacts.model".into(),
            path: input.to_string_lossy().into_owned(),
            artifacts: vec![model],
            fan_in: false,
        }];
        let check = format!("test \"$(cat {})\" = weights", input.display());
        assert_eq!(run(&consumer, &sh(&check)).await, 0);
    }

    #[tokio::test]
    async fn the_commands_exit_code_and_failure_message_are_kept() {
        let dir = temp("exit");
        let p = plan(&dir);
        assert_eq!(run(&p, &sh("echo 'bad input' > $WEIR_OUTPUTS; exit 3")).await, 3);
        assert_eq!(std::fs::read_to_string(&p.result).unwrap(), "bad input\n");
        assert_eq!(run(&p, &sh("kill -TERM $$")).await, 128 + libc::SIGTERM);
    }

    #[tokio::test]
    async fn what_weir_exec_cannot_do_is_its_own_failure() {
        let dir = temp("fail");
        let mut p = plan(&dir);
        p.artifacts = vec![ArtifactSpec {
            name: "model".into(),
            path: "/nonexistent/weir/model.pkl".into(),
        }];
        assert_eq!(run(&p, &sh("true")).await, FAILURE_EXIT_CODE);
        let message = std::fs::read_to_string(&p.result).unwrap();
        assert!(
            message.starts_with(FAILURE_PREFIX) && message.contains("/nonexistent/weir/model.pkl"),
            "{message}"
        );

        p.store = None;
        assert_eq!(run(&p, &sh("true")).await, FAILURE_EXIT_CODE);
        let message = std::fs::read_to_string(&p.result).unwrap();
        assert!(message.contains("no artifact store is configured"), "{message}");
    }

    #[tokio::test]
    async fn a_result_over_the_limit_is_refused() {
        let big = ArtifactRef {
            key: "k".repeat(5000),
            ..Default::default()
        };
        let map = with_references(BTreeMap::new(), &[("m".into(), big)]).unwrap();
        let e = result_text(&map).unwrap_err();
        assert!(e.contains("termination message"), "{e}");
        let dir = temp("unparsed");
        let p = plan(&dir);
        assert_eq!(run(&p, &sh("echo 'not key value' > $WEIR_OUTPUTS")).await, 0);
        assert_eq!(std::fs::read_to_string(&p.result).unwrap(), "not key value\n");
    }

    #[tokio::test]
    async fn large_values_go_through_the_store_and_come_back_whole() {
        let dir = temp("large");
        let p = plan(&dir);
        let script = r#"{ printf '{"rows": "7", "blob": "'; head -c 1048576 /dev/zero | tr '\0' x; printf '"}'; } > $WEIR_OUTPUTS"#;
        assert_eq!(
            run(&p, &sh(script)).await,
            0,
            "{:?}",
            std::fs::read_to_string(&p.result)
        );
        let text = std::fs::read_to_string(&p.result).unwrap();
        assert!(text.len() < outputs::MAX_BYTES, "{}", text.len());
        let result = outputs::parse(&text, &["rows".into(), "blob".into()]).unwrap();
        assert_eq!(result["rows"], "7");
        let moved: ArtifactRef = serde_json::from_str(&result[&outputs::large_key("blob")]).unwrap();
        assert_eq!(
            (moved.key.as_str(), moved.size),
            ("ns/run/run-a/1/outputs/blob", 1 << 20)
        );
        let store = Store::open(p.store.as_ref().unwrap(), None).unwrap();
        let back = store.get_checked(&moved).await.unwrap();
        assert_eq!(back, "x".repeat(1 << 20).into_bytes());

        let mut without = plan(&dir);
        without.store = None;
        let big = r#"{ printf big=; head -c 5000 /dev/zero | tr '\0' y; } > $WEIR_OUTPUTS"#;
        assert_eq!(run(&without, &sh(big)).await, FAILURE_EXIT_CODE);
        let message = std::fs::read_to_string(&without.result).unwrap();
        assert!(
            message.contains("no artifact store is configured to take the large values"),
            "{message}"
        );
    }
}
