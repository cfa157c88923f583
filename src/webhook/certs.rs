//! The webhook's serving certificate, without manual steps.
//!
//! Self-managed (the default): a CA and a serving certificate signed by it live in one
//! Secret of the operator's namespace (`tls.crt`, `tls.key`, `ca.crt`, `ca.key`). Every
//! replica reads the Secret every few seconds: whichever first finds it missing, or the
//! serving certificate past two thirds of its validity, issues a new one and writes it (an
//! optimistic-concurrency update: a replica that loses the race reads the winner's);
//! every replica serves whatever the Secret holds, and keeps the `caBundle` of the
//! ValidatingWebhookConfiguration equal to the Secret's `ca.crt`. Renewing the serving
//! certificate leaves the CA, so the API server trusts old and new alike. The CA itself is
//! renewed the same way near the end of its (much longer) validity; `ca.crt` then holds
//! the new CA followed by the previous one, so certificates signed by either verify while
//! replicas move over.
//!
//! External (`--webhook-certs external`, for cert-manager): the operator only serves the
//! `tls.crt`/`tls.key` it finds in the Secret and reloads them when they change;
//! cert-manager renews them and its cainjector fills the `caBundle`.

use super::{Error, Result};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const CA_NAME: &str = "weir-webhook-ca";
const NOT_AFTER: &str = "weir.dev/webhook-cert-not-after";
const CA_NOT_AFTER: &str = "weir.dev/webhook-ca-not-after";
const HOSTS: &str = "weir.dev/webhook-cert-hosts";
/// Certificates are valid from a little before they are made, for clocks a little behind.
const BACKDATE: SignedDuration = SignedDuration::from_mins(5);

/// How the operator gets its serving certificate.
#[derive(Clone, Debug)]
pub struct CertSettings {
    pub namespace: String,
    pub secret: String,
    /// Issue and rotate (true), or only load what cert-manager writes (false).
    pub manage: bool,
    /// Names the certificate is valid for (DNS names or IP addresses).
    pub hosts: Vec<String>,
    /// The ValidatingWebhookConfiguration whose `caBundle` is kept current (self-managed).
    pub configuration: Option<String>,
    /// The MutatingWebhookConfiguration (of approvals) whose `caBundle` is kept current.
    pub mutating_configuration: Option<String>,
    pub validity: Duration,
    pub ca_validity: Duration,
    /// How often the Secret is read: the longest a replica serves a replaced certificate.
    pub check_every: Duration,
}

/// The certificate rustls hands out, replaced in place when the Secret changes.
#[derive(Debug, Default)]
pub struct CertStore {
    current: RwLock<Option<(String, Arc<CertifiedKey>)>>,
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok()?.as_ref().map(|(_, key)| key.clone())
    }
}

impl CertStore {
    /// Serves `cert_pem` (a chain) with `key_pem` from now on; true if they are new.
    pub fn load(&self, cert_pem: &str, key_pem: &str) -> Result<bool> {
        if self
            .current
            .read()
            .map_err(|_| Error::Cert("certificate store poisoned".into()))?
            .as_ref()
            .is_some_and(|(pem, _)| pem == cert_pem)
        {
            return Ok(false);
        }
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Cert(format!("tls.crt: {e}")))?;
        if chain.is_empty() {
            return Err(Error::Cert("tls.crt holds no certificate".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| Error::Cert(format!("tls.key: {e}")))?;
        let signing = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| Error::Cert(format!("tls.key: {e}")))?;
        let certified = Arc::new(CertifiedKey::new(chain, signing));
        *self
            .current
            .write()
            .map_err(|_| Error::Cert("certificate store poisoned".into()))? =
            Some((cert_pem.to_string(), certified));
        Ok(true)
    }

    pub fn is_loaded(&self) -> bool {
        self.current.read().is_ok_and(|c| c.is_some())
    }
}

/// What the Secret holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Material {
    pub tls_crt: String,
    pub tls_key: String,
    /// The CA bundle: the current CA first, then the previous one after a CA renewal.
    pub ca_crt: String,
    pub ca_key: Option<String>,
    pub not_after: Option<Timestamp>,
    pub ca_not_after: Option<Timestamp>,
    pub hosts: Vec<String>,
}

impl Material {
    pub fn from_secret(secret: &Secret) -> Option<Material> {
        let data = secret.data.as_ref()?;
        let text = |key: &str| data.get(key).and_then(|b| String::from_utf8(b.0.clone()).ok());
        let annotations = secret.metadata.annotations.clone().unwrap_or_default();
        let time = |key: &str| annotations.get(key).and_then(|t| t.parse::<Timestamp>().ok());
        Some(Material {
            tls_crt: text("tls.crt")?,
            tls_key: text("tls.key")?,
            ca_crt: text("ca.crt").unwrap_or_default(),
            ca_key: text("ca.key"),
            not_after: time(NOT_AFTER),
            ca_not_after: time(CA_NOT_AFTER),
            hosts: annotations
                .get(HOSTS)
                .map(|h| h.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
        })
    }

    fn to_secret(&self, settings: &CertSettings, resource_version: Option<String>) -> Secret {
        let mut data = BTreeMap::from([
            (
                "tls.crt".to_string(),
                ByteString(self.tls_crt.clone().into_bytes()),
            ),
            (
                "tls.key".to_string(),
                ByteString(self.tls_key.clone().into_bytes()),
            ),
            ("ca.crt".to_string(), ByteString(self.ca_crt.clone().into_bytes())),
        ]);
        if let Some(key) = &self.ca_key {
            data.insert("ca.key".into(), ByteString(key.clone().into_bytes()));
        }
        let mut annotations = BTreeMap::from([(HOSTS.to_string(), self.hosts.join(","))]);
        for (key, time) in [(NOT_AFTER, self.not_after), (CA_NOT_AFTER, self.ca_not_after)] {
            if let Some(t) = time {
                annotations.insert(key.into(), t.to_string());
            }
        }
        Secret {
            metadata: ObjectMeta {
                name: Some(settings.secret.clone()),
                namespace: Some(settings.namespace.clone()),
                resource_version,
                annotations: Some(annotations),
                labels: Some(BTreeMap::from([(
                    crate::api::labels::MANAGED_BY.to_string(),
                    crate::api::labels::MANAGED_BY_VALUE.to_string(),
                )])),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(data),
            ..Default::default()
        }
    }
}

/// What to issue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    Keep,
    /// A new serving certificate from the same CA.
    Serving,
    /// A new CA, and a serving certificate from it.
    All,
}

/// When a certificate valid until `not_after` for `validity` is renewed: two thirds in.
fn renew_at(not_after: Timestamp, validity: Duration) -> Timestamp {
    let third = SignedDuration::try_from(validity / 3).unwrap_or(SignedDuration::ZERO);
    not_after.checked_sub(third).unwrap_or(not_after)
}

/// Whether the Secret's material needs renewing at `now`, and when to look again if not.
pub fn renewal(
    material: Option<&Material>,
    settings: &CertSettings,
    now: Timestamp,
) -> (Renewal, Option<Timestamp>) {
    let Some(m) = material else {
        return (Renewal::All, None);
    };
    let (Some(ca_key), Some(ca_not_after), Some(not_after)) = (&m.ca_key, m.ca_not_after, m.not_after) else {
        // Not written by us (or by an older layout): start afresh.
        return (Renewal::All, None);
    };
    let ca_renew = renew_at(ca_not_after, settings.ca_validity);
    if ca_key.is_empty() || now >= ca_renew {
        return (Renewal::All, None);
    }
    let renew = renew_at(not_after, settings.validity);
    if now >= renew || m.hosts != settings.hosts {
        return (Renewal::Serving, None);
    }
    (Renewal::Keep, Some(renew.min(ca_renew)))
}

fn to_time(t: Timestamp) -> Result<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp(t.as_second()).map_err(|e| Error::Cert(e.to_string()))
}

fn after(now: Timestamp, validity: Duration) -> Result<Timestamp> {
    SignedDuration::try_from(validity)
        .ok()
        .and_then(|d| now.checked_add(d).ok())
        .ok_or_else(|| Error::Cert(format!("validity {validity:?} is too long")))
}

fn ca_params(not_before: Timestamp, not_after: Timestamp) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = to_time(not_before)?;
    params.not_after = to_time(not_after)?;
    Ok(params)
}

/// New material at `now`: a serving certificate for `settings.hosts`, from the previous CA
/// (`Renewal::Serving`) or from a new one (`Renewal::All`).
pub fn issue(
    previous: Option<&Material>,
    renewal: Renewal,
    settings: &CertSettings,
    now: Timestamp,
) -> Result<Material> {
    let cert_err = |e: rcgen::Error| Error::Cert(e.to_string());
    let not_before = now.checked_sub(BACKDATE).unwrap_or(now);
    let reuse = previous.filter(|_| renewal == Renewal::Serving).and_then(|m| {
        let key = KeyPair::from_pem(m.ca_key.as_deref()?).ok()?;
        Some((key, m.ca_not_after?, m.ca_crt.clone()))
    });
    let (ca_key, ca_not_after, ca_crt) = match reuse {
        Some(ca) => ca,
        None => {
            let key = KeyPair::generate().map_err(cert_err)?;
            let not_after = after(now, settings.ca_validity)?;
            let cert = ca_params(not_before, not_after)?
                .self_signed(&key)
                .map_err(cert_err)?;
            // The previous CA stays trusted beside the new one (see the module's doc).
            let previous_ca = previous.and_then(|m| first_pem(&m.ca_crt)).unwrap_or_default();
            (key, not_after, format!("{}{previous_ca}", cert.pem()))
        }
    };
    let ca_key_pem = ca_key.serialize_pem();
    // Only the CA's name and key sign; its validity here does not matter.
    let issuer = Issuer::new(ca_params(not_before, ca_not_after)?, ca_key);
    let not_after = after(now, settings.validity)?.min(ca_not_after);
    let mut params = CertificateParams::new(settings.hosts.clone()).map_err(cert_err)?;
    params.distinguished_name.push(
        DnType::CommonName,
        settings
            .hosts
            .first()
            .cloned()
            .unwrap_or_else(|| "weir-webhook".into()),
    );
    params.not_before = to_time(not_before)?;
    params.not_after = to_time(not_after)?;
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().map_err(cert_err)?;
    let cert = params.signed_by(&key, &issuer).map_err(cert_err)?;
    Ok(Material {
        tls_crt: cert.pem(),
        tls_key: key.serialize_pem(),
        ca_crt,
        ca_key: Some(ca_key_pem),
        not_after: Some(not_after),
        ca_not_after: Some(ca_not_after),
        hosts: settings.hosts.clone(),
    })
}

/// The first PEM block of a bundle.
fn first_pem(bundle: &str) -> Option<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let end = bundle.find(END)? + END.len();
    Some(format!("{}\n", bundle[..end].trim_start()))
}

/// Keeps `store` serving the Secret's certificate (issuing and renewing it when managed)
/// until `shutdown`.
pub async fn maintain(
    client: kube::Client,
    settings: CertSettings,
    store: Arc<CertStore>,
    shutdown: CancellationToken,
) {
    let mut last_error = String::new();
    loop {
        let wait = match sync(&client, &settings, &store).await {
            Ok(wait) => {
                last_error.clear();
                wait
            }
            Err(err) => {
                // Said once until it changes, not every few seconds.
                let text = err.to_string();
                if text != last_error {
                    tracing::warn!(error = %text, secret = %settings.secret, "webhook certificate");
                    last_error = text;
                }
                settings.check_every.min(Duration::from_secs(5))
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One look at the Secret; returns how long to wait before the next.
async fn sync(client: &kube::Client, settings: &CertSettings, store: &CertStore) -> Result<Duration> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &settings.namespace);
    let secret = api.get_opt(&settings.secret).await?;
    let mut material = secret.as_ref().and_then(Material::from_secret);
    let mut wait = settings.check_every;
    if settings.manage {
        let now = Timestamp::now();
        let (renew, next) = renewal(material.as_ref(), settings, now);
        if renew != Renewal::Keep {
            let fresh = issue(material.as_ref(), renew, settings, now)?;
            let written = match &secret {
                Some(s) => {
                    let version = s.metadata.resource_version.clone();
                    api.replace(
                        &settings.secret,
                        &PostParams::default(),
                        &fresh.to_secret(settings, version),
                    )
                    .await
                }
                None => {
                    api.create(&PostParams::default(), &fresh.to_secret(settings, None))
                        .await
                }
            };
            match written {
                Ok(_) => {
                    tracing::info!(secret = %settings.secret, ?renew, not_after = ?fresh.not_after, "webhook certificate issued")
                }
                // Another replica wrote first: serve what it wrote.
                Err(kube::Error::Api(e)) if e.code == 409 => return Ok(Duration::ZERO),
                Err(e) => return Err(e.into()),
            }
            material = Some(fresh);
        } else if let Some(next) = next {
            let until = next.duration_since(now).unsigned_abs();
            wait = wait.min(until);
        }
    }
    let Some(m) = material else {
        return Err(Error::Cert(format!(
            "Secret {}/{} has no tls.crt and tls.key yet",
            settings.namespace, settings.secret
        )));
    };
    if store.load(&m.tls_crt, &m.tls_key)? {
        tracing::info!(secret = %settings.secret, not_after = ?m.not_after, "serving the webhook certificate");
    }
    if settings.manage
        && let Some(name) = &settings.configuration
    {
        ensure_ca_bundle::<ValidatingWebhookConfiguration>(client, name, &m.ca_crt).await?;
    }
    if settings.manage
        && let Some(name) = &settings.mutating_configuration
    {
        ensure_ca_bundle::<MutatingWebhookConfiguration>(client, name, &m.ca_crt).await?;
    }
    Ok(wait)
}

/// A webhook configuration, validating or mutating: the `caBundle`s of its webhooks.
trait WebhookConfiguration:
    kube::Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
    + Clone
    + std::fmt::Debug
    + serde::Serialize
    + serde::de::DeserializeOwned
{
    /// Sets every webhook's `caBundle` to `bundle`; true if one changed.
    fn set_bundles(&mut self, bundle: &ByteString) -> bool;
}

macro_rules! ca_bundles {
    ($kind:ty) => {
        impl WebhookConfiguration for $kind {
            fn set_bundles(&mut self, bundle: &ByteString) -> bool {
                let mut changed = false;
                for webhook in self.webhooks.iter_mut().flatten() {
                    if webhook.client_config.ca_bundle.as_ref() != Some(bundle) {
                        webhook.client_config.ca_bundle = Some(bundle.clone());
                        changed = true;
                    }
                }
                changed
            }
        }
    };
}
ca_bundles!(ValidatingWebhookConfiguration);
ca_bundles!(MutatingWebhookConfiguration);

/// Sets every webhook's `caBundle` of the configuration `name` to `ca`.
async fn ensure_ca_bundle<K: WebhookConfiguration>(
    client: &kube::Client,
    name: &str,
    ca: &str,
) -> Result<()> {
    let api: Api<K> = Api::all(client.clone());
    let Some(mut config) = api.get_opt(name).await? else {
        return Err(Error::Cert(format!(
            "{} {name} not found: the API server does not call the webhook",
            K::kind(&())
        )));
    };
    let changed = config.set_bundles(&ByteString(ca.as_bytes().to_vec()));
    if changed {
        match api.replace(name, &PostParams::default(), &config).await {
            Ok(_) => tracing::info!(configuration = name, "webhook caBundle updated"),
            // Another replica updated it first (with the same Secret's CA); the next look
            // checks it.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier as _;

    fn settings() -> CertSettings {
        CertSettings {
            namespace: "weir-system".into(),
            secret: "weir-webhook-tls".into(),
            manage: true,
            hosts: vec!["weir-webhook.weir-system.svc".into(), "127.0.0.1".into()],
            configuration: None,
            mutating_configuration: None,
            validity: Duration::from_secs(3600),
            ca_validity: Duration::from_secs(36_000),
            check_every: Duration::from_secs(10),
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn renewal_is_due_two_thirds_into_each_validity() {
        let s = settings();
        let t0 = ts("2026-01-01T00:00:00Z");
        assert_eq!(renewal(None, &s, t0).0, Renewal::All);
        let m = issue(None, Renewal::All, &s, t0).unwrap();
        assert_eq!(m.not_after, Some(ts("2026-01-01T01:00:00Z")));
        let (r, next) = renewal(Some(&m), &s, t0);
        assert_eq!((r, next), (Renewal::Keep, Some(ts("2026-01-01T00:40:00Z"))));
        assert_eq!(
            renewal(Some(&m), &s, ts("2026-01-01T00:40:00Z")).0,
            Renewal::Serving
        );
        assert_eq!(renewal(Some(&m), &s, ts("2026-01-01T06:40:00Z")).0, Renewal::All);
        let mut other_hosts = s.clone();
        other_hosts.hosts.push("weir.example".into());
        assert_eq!(renewal(Some(&m), &other_hosts, t0).0, Renewal::Serving);
    }

    #[test]
    fn a_renewed_serving_certificate_keeps_the_ca_and_a_new_ca_keeps_the_old_one_trusted() {
        let s = settings();
        let t0 = ts("2026-01-01T00:00:00Z");
        let first = issue(None, Renewal::All, &s, t0).unwrap();
        let second = issue(Some(&first), Renewal::Serving, &s, ts("2026-01-01T00:40:00Z")).unwrap();
        assert_eq!(second.ca_crt, first.ca_crt);
        assert_eq!(second.ca_key, first.ca_key);
        assert_ne!(second.tls_crt, first.tls_crt);
        let third = issue(Some(&second), Renewal::All, &s, ts("2026-01-01T06:40:00Z")).unwrap();
        assert_ne!(third.ca_key, first.ca_key);
        assert_eq!(third.ca_crt.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(
            third.ca_crt.ends_with(&first.ca_crt),
            "the previous CA follows the new one"
        );
        // Never valid past the CA.
        let late = issue(Some(&third), Renewal::Serving, &s, ts("2026-01-01T16:39:30Z")).unwrap();
        assert_eq!(late.not_after, third.ca_not_after);
    }

    #[test]
    fn material_survives_the_secret_and_the_store_loads_it() {
        let s = settings();
        let m = issue(None, Renewal::All, &s, Timestamp::now()).unwrap();
        let secret = m.to_secret(&s, Some("7".into()));
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(Material::from_secret(&secret), Some(m.clone()));
        let store = CertStore::default();
        assert!(!store.is_loaded());
        assert!(store.load(&m.tls_crt, &m.tls_key).unwrap());
        assert!(!store.load(&m.tls_crt, &m.tls_key).unwrap(), "unchanged");
        assert!(store.is_loaded());
        let e = store.load("not a certificate", &m.tls_key).unwrap_err();
        assert!(e.to_string().contains("tls.crt"), "{e}");
    }

    #[test]
    fn a_served_certificate_verifies_against_the_bundle_for_every_host() {
        let s = settings();
        let m = issue(None, Renewal::All, &s, Timestamp::now()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(m.ca_crt.as_bytes()) {
            roots.add(ca.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
        let leaf = CertificateDer::from_pem_slice(m.tls_crt.as_bytes()).unwrap();
        for host in &s.hosts {
            let name = rustls::pki_types::ServerName::try_from(host.as_str()).unwrap();
            verifier
                .verify_server_cert(&leaf, &[], &name, &[], rustls::pki_types::UnixTime::now())
                .unwrap_or_else(|e| panic!("{host}: {e}"));
        }
        let wrong = rustls::pki_types::ServerName::try_from("other.svc").unwrap();
        assert!(
            verifier
                .verify_server_cert(&leaf, &[], &wrong, &[], rustls::pki_types::UnixTime::now())
                .is_err()
        );
    }
}
