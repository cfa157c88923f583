//! What every subcommand that talks to a cluster shares: the kubeconfig flags kubectl users
//! know (`-n/--namespace`, `--context`, `--kubeconfig`, `$KUBECONFIG`), one way to connect,
//! and errors that say what went wrong in the reader's terms: which run is missing from
//! which namespace, which verb on which resource RBAC refused, which server could not be
//! reached.

use anyhow::{Context as _, anyhow};
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::path::PathBuf;
use std::time::Duration;

/// The flags that choose the cluster and namespace, as kubectl has them.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ClusterArgs {
    /// Namespace to work in (default: the namespace of the kubeconfig context, else
    /// `default`).
    #[arg(short, long, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, value_name = "CONTEXT")]
    pub context: Option<String>,
    /// The kubeconfig file to use (default: `$KUBECONFIG`, else `~/.kube/config`; in a pod
    /// without either, its service account).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
}

/// A client with the namespace to work in, and what error messages need to say where.
#[derive(Clone)]
pub struct Cluster {
    pub client: kube::Client,
    pub namespace: String,
    /// The kubeconfig context used (`None` in a pod, with its service account).
    pub context: Option<String>,
    /// The API server's URL.
    pub server: String,
}

/// The field manager of every write of the CLI, so `managedFields` (and the operator's
/// `status.rerun.requestedBy`) say the change came from `weir`.
pub const FIELD_MANAGER: &str = "weir";

/// Options of the CLI's merge patches: they are recorded under [`FIELD_MANAGER`].
pub fn patch_params() -> kube::api::PatchParams {
    kube::api::PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    }
}

/// Options of the CLI's creates: they are recorded under [`FIELD_MANAGER`].
pub fn post_params() -> kube::api::PostParams {
    kube::api::PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    }
}

/// How long to wait for a TCP connection to the API server before calling it unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects as kubectl would: the kubeconfig named by `--kubeconfig`, else `$KUBECONFIG`
/// (several files merged), else `~/.kube/config`, else the pod's service account; the
/// context named by `--context`, else the current one; the namespace named by `-n`, else
/// the context's, else `default`.
pub async fn connect(args: &ClusterArgs) -> anyhow::Result<Cluster> {
    let (config, context) = load_config(args).await?;
    let server = config.cluster_url.to_string();
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).context("building a Kubernetes client")?;
    Ok(Cluster {
        client,
        namespace,
        context,
        server: server.trim_end_matches('/').to_string(),
    })
}

/// The client configuration [`connect`] uses, and the kubeconfig context it names (`None`
/// in a pod): for those that make clients of their own from it (the UI, one per user).
pub async fn load_config(args: &ClusterArgs) -> anyhow::Result<(kube::Config, Option<String>)> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        cluster: None,
        user: None,
    };
    let kubeconfig = match &args.kubeconfig {
        Some(path) => Some(
            Kubeconfig::read_from(path)
                .with_context(|| format!("reading the kubeconfig {}", path.display()))?,
        ),
        None => match Kubeconfig::read() {
            Ok(kc) => Some(kc),
            // No kubeconfig at all: perhaps a pod, with a service account.
            Err(_) if args.context.is_none() && kube::Config::incluster().is_ok() => None,
            Err(e) => {
                return Err(anyhow!(
                    "no kubeconfig to connect with ({e}): set KUBECONFIG, pass --kubeconfig, or create ~/.kube/config"
                ));
            }
        },
    };
    let (mut config, context) = match kubeconfig {
        Some(kc) => {
            let context = args.context.clone().or_else(|| kc.current_context.clone());
            if let Some(wanted) = &args.context
                && !kc.contexts.iter().any(|c| &c.name == wanted)
            {
                let known: Vec<&str> = kc.contexts.iter().map(|c| c.name.as_str()).collect();
                return Err(anyhow!(
                    "context {wanted:?} is not in the kubeconfig (it has: {})",
                    known.join(", ")
                ));
            }
            let config = kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .with_context(|| match &context {
                    Some(c) => format!("loading context {c:?} of the kubeconfig"),
                    None => {
                        "loading the kubeconfig (it names no current context: pass --context)".to_string()
                    }
                })?;
            (config, context)
        }
        None => (
            kube::Config::incluster().context("loading the pod's service account")?,
            None,
        ),
    };
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    Ok((config, context))
}

/// A kind of object the CLI reads or writes, named as RBAC and people name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resource {
    /// Singular, lowercase, as in messages: `pipelinerun`.
    pub singular: &'static str,
    /// As RBAC rules name it: `pipelineruns`, `pods/log`.
    pub plural: &'static str,
    /// API group, empty for the core group.
    pub group: &'static str,
}

impl Resource {
    /// `pipelineruns.weir.dev`, `pods`: the name `kubectl auth can-i` takes.
    pub fn full_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    fn is_weir(&self) -> bool {
        self.group == crate::api::GROUP
    }
}

pub const PIPELINE_RUNS: Resource = Resource {
    singular: "pipelinerun",
    plural: "pipelineruns",
    group: crate::api::GROUP,
};
pub const ASSETS: Resource = Resource {
    singular: "asset",
    plural: "assets",
    group: crate::api::GROUP,
};
pub const PIPELINES: Resource = Resource {
    singular: "pipeline",
    plural: "pipelines",
    group: crate::api::GROUP,
};
pub const TASK_RUNS: Resource = Resource {
    singular: "taskrun",
    plural: "taskruns",
    group: crate::api::GROUP,
};
pub const PIPELINE_REVISIONS: Resource = Resource {
    singular: "pipelinerevision",
    plural: "pipelinerevisions",
    group: crate::api::GROUP,
};
pub const PODS: Resource = Resource {
    singular: "pod",
    plural: "pods",
    group: "",
};
pub const POD_LOGS: Resource = Resource {
    singular: "pod log",
    plural: "pods/log",
    group: "",
};

/// One request that failed: what it did, on what.
pub struct Request<'a> {
    pub verb: &'static str,
    pub resource: Resource,
    pub name: Option<&'a str>,
}

impl Cluster {
    /// A `kube::Api` of `K` in the namespace.
    pub fn api<K>(&self) -> kube::Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        kube::Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn where_(&self) -> String {
        match &self.context {
            Some(c) => format!("{} (context {c})", self.server),
            None => format!("{} (in-cluster service account)", self.server),
        }
    }

    /// The error a person can act on, for a failed request.
    pub fn explain(&self, err: kube::Error, request: Request<'_>) -> anyhow::Error {
        let Request { verb, resource, name } = request;
        let ns = &self.namespace;
        let status = match err {
            kube::Error::Api(status) => status,
            kube::Error::Auth(e) => {
                return anyhow!("could not get credentials for {}: {}", self.where_(), chain(&e));
            }
            other if is_transport(&other) => {
                // What went wrong is in the causes; kube's own wrapper says nothing more.
                let cause = match std::error::Error::source(&other) {
                    Some(source) => chain(source),
                    None => other.to_string(),
                };
                return anyhow!(
                    "cannot reach the Kubernetes API server at {}: {cause}",
                    self.where_()
                );
            }
            other => {
                let what = match name {
                    Some(n) => format!("{verb} {} {n}", resource.singular),
                    None => format!("{verb} {}", resource.full_name()),
                };
                return anyhow!("{what} in namespace {ns}: {}", chain(&other));
            }
        };
        let text = match status.code {
            404 => not_found(&status, resource, name, ns),
            403 => forbidden(&status, verb, resource, ns),
            401 => anyhow!(
                "the API server at {} refused the credentials (401 Unauthorized): log in again or refresh the kubeconfig's token",
                self.where_()
            ),
            _ => {
                let what = match name {
                    Some(n) => format!("{verb} {} {n}", resource.singular),
                    None => format!("{verb} {}", resource.full_name()),
                };
                anyhow!(
                    "{what} in namespace {ns}: {} ({} {})",
                    status.message,
                    status.code,
                    status.reason
                )
            }
        };
        anyhow::Error::new(Refused {
            text: text.to_string(),
            code: status.code,
            reason: status.reason.clone(),
            message: status.message.clone(),
        })
    }
}

/// A request the API server answered with an error status: what to tell a person (its
/// `Display`), and the status itself, for those (the UI) that relay it as it was.
#[derive(Debug, Clone)]
pub struct Refused {
    text: String,
    /// The HTTP status code: 403, 404, 409, 422, ...
    pub code: u16,
    /// The status reason: `Forbidden`, `NotFound`, `Invalid`, ...
    pub reason: String,
    /// The API server's own message.
    pub message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for Refused {}

/// `pipelinerun x not found in namespace y`, or, when the resource type itself is
/// unknown, that Weir's CRDs are missing.
fn not_found(status: &kube::core::Status, resource: Resource, name: Option<&str>, ns: &str) -> anyhow::Error {
    let named = status
        .details
        .as_ref()
        .map(|d| d.name.as_str())
        .filter(|n| !n.is_empty());
    match (name, named) {
        (Some(name), Some(reported)) if reported == name => {
            anyhow!("{} {name} not found in namespace {ns}", resource.singular)
        }
        _ if resource.is_weir() => anyhow!(
            "the API server does not serve {}: are Weir's CRDs installed? (kubectl get crd {})",
            resource.full_name(),
            resource.full_name()
        ),
        (Some(name), _) => anyhow!("{} {name} not found in namespace {ns}", resource.singular),
        (None, _) => anyhow!(
            "{} not found in namespace {ns}: {}",
            resource.full_name(),
            status.message
        ),
    }
}

/// Which verb on which resource RBAC refused, and to whom. The API server's message says
/// it (`User "u" cannot patch resource "pipelineruns" in API group "weir.dev" in the
/// namespace "n"`); the request's own verb and resource stand in when it does not.
fn forbidden(status: &kube::core::Status, verb: &str, resource: Resource, ns: &str) -> anyhow::Error {
    let parsed = parse_forbidden(&status.message);
    let (user, verb, plural, group, ns) = match &parsed {
        Some(f) => (
            Some(f.user.as_str()),
            f.verb.as_str(),
            f.resource.as_str(),
            f.group.as_str(),
            f.namespace.as_deref().unwrap_or(ns),
        ),
        None => (None, verb, resource.plural, resource.group, ns),
    };
    let full = if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    };
    let who = user
        .map(|u| format!("User {u:?}"))
        .unwrap_or_else(|| "you".into());
    let group_text = if group.is_empty() {
        "the core API group".to_string()
    } else {
        format!("API group {group:?}")
    };
    anyhow!(
        "forbidden: {who} may not {verb} {full} in namespace {ns}. A Role bound to you needs verb {verb:?} on resource {plural:?} of {group_text} (check with: kubectl auth can-i {verb} {full} -n {ns})"
    )
}

struct Forbidden {
    user: String,
    verb: String,
    resource: String,
    group: String,
    namespace: Option<String>,
}

fn parse_forbidden(message: &str) -> Option<Forbidden> {
    static PATTERN: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let pattern = PATTERN.get_or_init(|| {
        regex::Regex::new(
            r#"User "([^"]*)" cannot (\S+) resource "([^"]*)" in API group "([^"]*)"(?: in the namespace "([^"]*)")?"#,
        )
        .expect("a valid pattern")
    });
    let c = pattern.captures(message)?;
    Some(Forbidden {
        user: c[1].to_string(),
        verb: c[2].to_string(),
        resource: c[3].to_string(),
        group: c[4].to_string(),
        namespace: c.get(5).map(|m| m.as_str().to_string()),
    })
}

/// Errors of the connection rather than of the API: refused, timed out, TLS, DNS.
fn is_transport(err: &kube::Error) -> bool {
    matches!(
        err,
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::RustlsTls(_)
    )
}

/// An error and its causes on one line, without repeating a cause a message already holds.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

/// `Result<T, kube::Error>` turned into an error a person can act on.
pub trait Explain<T> {
    fn explain(
        self,
        cluster: &Cluster,
        verb: &'static str,
        resource: Resource,
        name: Option<&str>,
    ) -> anyhow::Result<T>;
}

impl<T> Explain<T> for Result<T, kube::Error> {
    fn explain(
        self,
        cluster: &Cluster,
        verb: &'static str,
        resource: Resource,
        name: Option<&str>,
    ) -> anyhow::Result<T> {
        self.map_err(|e| cluster.explain(e, Request { verb, resource, name }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn status(code: u16, reason: &str, message: &str, name: &str) -> Status {
        serde_json::from_value(serde_json::json!({
            "status": "Failure",
            "code": code,
            "reason": reason,
            "message": message,
            "details": {"name": name, "group": "weir.dev", "kind": "pipelineruns"},
        }))
        .unwrap()
    }

    #[test]
    fn forbidden_names_the_verb_and_resource_from_the_message() {
        let s = status(
            403,
            "Forbidden",
            r#"pipelineruns.weir.dev "nightly" is forbidden: User "system:serviceaccount:t:reader" cannot patch resource "pipelineruns" in API group "weir.dev" in the namespace "t""#,
            "nightly",
        );
        let text = forbidden(&s, "get", PIPELINE_RUNS, "other").to_string();
        assert_eq!(
            text,
            r#"forbidden: User "system:serviceaccount:t:reader" may not patch pipelineruns.weir.dev in namespace t. A Role bound to you needs verb "patch" on resource "pipelineruns" of API group "weir.dev" (check with: kubectl auth can-i patch pipelineruns.weir.dev -n t)"#
        );
        let s = status(
            403,
            "Forbidden",
            r#"pods "x" is forbidden: User "u" cannot get resource "pods/log" in API group "" in the namespace "t""#,
            "x",
        );
        assert!(
            forbidden(&s, "get", POD_LOGS, "t")
                .to_string()
                .contains(r#"verb "get" on resource "pods/log" of the core API group"#)
        );
    }

    #[test]
    fn forbidden_without_a_readable_message_uses_the_request() {
        let s = status(403, "Forbidden", "denied by a webhook", "");
        assert_eq!(
            forbidden(&s, "list", TASK_RUNS, "t").to_string(),
            r#"forbidden: you may not list taskruns.weir.dev in namespace t. A Role bound to you needs verb "list" on resource "taskruns" of API group "weir.dev" (check with: kubectl auth can-i list taskruns.weir.dev -n t)"#
        );
    }

    #[test]
    fn not_found_tells_a_missing_object_from_a_missing_crd() {
        let s = status(
            404,
            "NotFound",
            r#"pipelineruns.weir.dev "nope" not found"#,
            "nope",
        );
        assert_eq!(
            not_found(&s, PIPELINE_RUNS, Some("nope"), "t").to_string(),
            "pipelinerun nope not found in namespace t"
        );
        let s = status(
            404,
            "NotFound",
            "the server could not find the requested resource",
            "",
        );
        assert!(
            not_found(&s, PIPELINE_RUNS, Some("nope"), "t")
                .to_string()
                .contains("are Weir's CRDs installed?")
        );
    }
}
