//! ACME certificates for listeners (`listener.acme`): what the core order machine
//! ([`rmox_core::acme::AcmeOrder`]) asks for, answered here, and the renewal loop.
//!
//! * Files, under `DATA/acme/`: `account.key` (the account's P-256 key, PKCS#8 PEM, made
//!   at the first start) and, per certificate (named by its first host name),
//!   `NAME.crt` (the chain from the CA) and `NAME.key` (its key), both written atomically.
//! * At start ([`Acme::setup`]), each ACME listener gets a [`CertResolver`]: the stored
//!   certificate when it covers the configured names, else a self-signed certificate for
//!   them, served until the first one from the CA arrives.
//! * The renewal loop ([`Acme::run`]) is a task of the server's runtime: per listener,
//!   an order at once when there is no usable certificate, else when fewer than
//!   `renew_before_days` remain (never sooner than `limits.acme_min_renew_interval_secs`
//!   after the last issue); the new certificate is stored and swapped into the resolver
//!   without a restart. A failure is logged with its reason and retried after
//!   [`rmox_core::acme::retry_delay`] (a minute, doubling to six hours, or the CA's
//!   `Retry-After`).
//! * Challenges: `tls-alpn-01` certificates go into the listener's resolver (served for
//!   ALPN `acme-tls/1`); `http-01` key authorizations into [`Http01`], which the `http`
//!   port's routes ([`crate::web::Web`]) answer from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use rmox_core::acme::{
    self, AccountKey, AcmeConfig, AcmeError, AcmeOrder, Challenge, ChallengeKind, Completion,
    Effect, Event, Input, Issued, Output,
};
use rmox_core::tls::CertResolver;
use rmox_core::UnixTime;
use rmox_driver::outbound::Net;

use crate::config::{AcmeChallenge, Config};
use crate::resolve::Dns;
use crate::Fail;

/// The `http-01` key authorizations being served, by token.
#[derive(Debug, Default)]
pub struct Http01 {
    tokens: Mutex<BTreeMap<String, String>>,
}

impl Http01 {
    /// The key authorization of `token`, while its challenge is published.
    pub fn answer(&self, token: &str) -> Option<String> {
        self.lock().get(token).cloned()
    }

    /// Answers `token` with `key_authorization` (`None`: not any more).
    pub fn set(&self, token: &str, key_authorization: Option<String>) {
        let mut g = self.lock();
        match key_authorization {
            Some(k) => g.insert(token.to_string(), k),
            None => g.remove(token),
        };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        // A poisoned lock still holds a consistent map: writers insert or remove one entry.
        match self.tokens.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

/// One listener's ACME certificate.
pub struct ListenerAcme {
    /// `listener[i]` and its name, for logs.
    label: String,
    /// The certificate's names.
    names: Vec<String>,
    /// The order settings.
    config: Arc<AcmeConfig>,
    /// Renew when this little time remains.
    renew_before: Duration,
    /// The client TLS config for the CA's HTTPS.
    fetch: Arc<rmox_core::http::FetchConfig>,
    /// Where the chain and key are stored.
    cert_path: PathBuf,
    key_path: PathBuf,
    /// What the listener's TLS serves.
    pub resolver: Arc<CertResolver>,
    /// When to order: `None` at once (no usable certificate).
    due: Mutex<Option<UnixTime>>,
}

impl ListenerAcme {
    /// The listener this is for (`listener[i] (NAME)`).
    pub fn label(&self) -> &str {
        &self.label
    }
}

/// Every ACME listener of a configuration, the account key, and the `http-01` answers.
pub struct Acme {
    /// The listeners, in configuration order, with their index.
    pub listeners: Vec<(usize, Arc<ListenerAcme>)>,
    /// The `http-01` answers.
    pub http01: Arc<Http01>,
    key: Option<Arc<ring::signature::EcdsaKeyPair>>,
    min_interval: Duration,
}

/// A file under the data directory, written atomically (temporary file, fsync, rename),
/// readable by the owner only.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let mut f = o.open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The account key at `path`, made (and stored) when the file does not exist.
fn account_key(path: &Path) -> Result<ring::signature::EcdsaKeyPair, String> {
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING as ALG};
    use rustls::pki_types::pem::PemObject;
    let rng = ring::rand::SystemRandom::new();
    let der = match std::fs::read(path) {
        Ok(text) => rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(&text)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .secret_pkcs8_der()
            .to_vec(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let doc = EcdsaKeyPair::generate_pkcs8(&ALG, &rng)
                .map_err(|_| "making the ACME account key failed".to_string())?;
            write_private(path, pem("PRIVATE KEY", doc.as_ref()).as_bytes())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            tracing::info!(path = %path.display(), "acme: account key created");
            doc.as_ref().to_vec()
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    EcdsaKeyPair::from_pkcs8(&ALG, &der, &rng)
        .map_err(|e| format!("{}: not a P-256 key: {e}", path.display()))
}

/// The names of the certificate of listener `l`.
pub fn names(c: &Config, a: &crate::config::AcmeListener) -> Vec<String> {
    a.hostnames
        .clone()
        .unwrap_or_else(|| vec![c.hostname.clone()])
        .iter()
        .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
        .collect()
}

/// A self-signed certificate for `names`, served until the CA's arrives.
fn self_signed(names: &[String]) -> Result<rmox_core::tls::CertifiedKey, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = rcgen::CertificateParams::new(names.to_vec())
        .and_then(|p| p.self_signed(&key))
        .map_err(|e| e.to_string())?;
    rmox_core::tls::certified_key_from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
        .map_err(|e| e.to_string())
}

/// The `tls-alpn-01` certificate of a challenge (RFC 8737 3): self-signed for the name,
/// with the critical `acmeIdentifier` extension holding SHA-256 of the key authorization.
fn challenge_certificate(c: &Challenge) -> Result<rmox_core::tls::CertifiedKey, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut p =
        rcgen::CertificateParams::new(vec![c.identifier.clone()]).map_err(|e| e.to_string())?;
    p.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(
        &c.key_authorization_digest(),
    )];
    let cert = p.self_signed(&key).map_err(|e| e.to_string())?;
    rmox_core::tls::certified_key_unchecked(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
        .map_err(|e| e.to_string())
}

/// The stored certificate at `cert`/`key` when it covers `names` and has not expired:
/// the certified key and its expiry.
fn stored(
    cert: &Path,
    key: &Path,
    names: &[String],
    now: UnixTime,
) -> Option<(rmox_core::tls::CertifiedKey, UnixTime)> {
    let (c, k) = (std::fs::read(cert).ok()?, std::fs::read(key).ok()?);
    let ck = match rmox_core::tls::certified_key_from_pem(&c, &k) {
        Ok(ck) => ck,
        Err(e) => {
            tracing::warn!(path = %cert.display(), error = %e, "acme: stored certificate unusable: ordering a new one");
            return None;
        }
    };
    let leaf = rmox_core::tls::leaf_der(&ck)?;
    let (_, not_after) = acme::x509::validity(leaf)?;
    let have = rmox_core::tls::certificate_dns_names(leaf);
    if not_after <= now || !names.iter().all(|n| have.iter().any(|h| h == n)) {
        tracing::info!(path = %cert.display(), "acme: stored certificate expired or for other names: ordering a new one");
        return None;
    }
    Some((ck, not_after))
}

/// The modification time of `p` as Unix time.
fn mtime(p: &Path) -> Option<UnixTime> {
    let m = std::fs::metadata(p).ok()?.modified().ok()?;
    let secs = m.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    Some(UnixTime(i64::try_from(secs).ok()?))
}

impl Acme {
    /// The ACME listeners of `c`, each with its resolver serving the stored certificate
    /// or a self-signed one; the account key loaded or made. Errors name the key at
    /// fault.
    pub fn setup(c: &Config) -> Result<Acme, Fail> {
        let mut listeners = Vec::new();
        let now = rmox_driver::now().wall;
        let dir = c.data_dir().join("acme");
        let file = c.path.display();
        for (i, l) in c.listener.iter().enumerate() {
            let Some(a) = &l.acme else {
                continue;
            };
            let label = format!("listener[{i}] ({})", l.name);
            let tls = match &a.ca_file {
                Some(f) => {
                    let p = c.resolve_path(f);
                    let pem = std::fs::read(&p).map_err(|e| {
                        Fail(format!(
                            "{file}: listener[{i}].acme.ca_file: {}: {e}",
                            p.display()
                        ))
                    })?;
                    rmox_core::tls::pkix_config_from_pem(&pem).map_err(|e| {
                        Fail(format!(
                            "{file}: listener[{i}].acme.ca_file: {}: {e}",
                            p.display()
                        ))
                    })?
                }
                None => crate::queue::pkix_for(None).ok_or_else(|| {
                    Fail(format!(
                        "{file}: listener[{i}].acme: the system's trusted roots cannot be loaded; set ca_file"
                    ))
                })?,
            };
            let names = names(c, a);
            let mut config = AcmeConfig::new(
                &a.directory_url,
                match a.challenge {
                    AcmeChallenge::TlsAlpn01 => ChallengeKind::TlsAlpn01,
                    AcmeChallenge::Http01 => ChallengeKind::Http01,
                },
            );
            config.contact = a.contact.clone();
            let fetch = rmox_core::http::FetchConfig {
                tls,
                limits: rmox_core::http::Limits {
                    max_body: 1 << 20,
                    ..Default::default()
                },
                timeout: Duration::from_secs(60),
                user_agent: "rmox".into(),
                allow_http: false,
            };
            let base = names[0].clone();
            let cert_path = dir.join(format!("{base}.crt"));
            let key_path = dir.join(format!("{base}.key"));
            let resolver = Arc::new(CertResolver::default());
            let renew_before = Duration::from_secs(u64::from(a.renew_before_days) * 86_400);
            let min = Duration::from_secs(c.limits.acme_min_renew_interval_secs);
            let due = match stored(&cert_path, &key_path, &names, now) {
                Some((ck, not_after)) => {
                    resolver.set_certificate(ck);
                    let issued = mtime(&cert_path).unwrap_or(now);
                    let at = acme::renew_at(issued, not_after, renew_before, min);
                    tracing::info!(listener = %label, names = %names.join(","), not_after = not_after.0, renew_at = at.0, "acme: stored certificate");
                    Some(at)
                }
                None => {
                    let ck = self_signed(&names).map_err(|e| {
                        Fail(format!("{label}: acme: self-signed certificate: {e}"))
                    })?;
                    resolver.set_certificate(ck);
                    tracing::info!(listener = %label, names = %names.join(","), "acme: no certificate yet: serving a self-signed one until the CA's arrives");
                    None
                }
            };
            listeners.push((
                i,
                Arc::new(ListenerAcme {
                    label,
                    names,
                    config: Arc::new(config),
                    renew_before,
                    fetch: Arc::new(fetch),
                    cert_path,
                    key_path,
                    resolver,
                    due: Mutex::new(due),
                }),
            ));
        }
        let key = if listeners.is_empty() {
            None
        } else {
            std::fs::create_dir_all(&dir)
                .map_err(|e| Fail(format!("acme: {}: {e}", dir.display())))?;
            Some(Arc::new(
                account_key(&dir.join("account.key")).map_err(|e| Fail(format!("acme: {e}")))?,
            ))
        };
        Ok(Acme {
            listeners,
            http01: Arc::new(Http01::default()),
            key,
            min_interval: Duration::from_secs(c.limits.acme_min_renew_interval_secs),
        })
    }

    /// The ACME state of listener `i`, if it has one.
    pub fn listener(&self, i: usize) -> Option<&Arc<ListenerAcme>> {
        self.listeners.iter().find(|(j, _)| *j == i).map(|(_, l)| l)
    }

    /// Whether any listener uses ACME.
    pub fn any(&self) -> bool {
        !self.listeners.is_empty()
    }

    /// Runs every listener's renewal loop on `rt` until `shutdown`; names resolved through
    /// `dns` (an IP address in the directory URL needs none).
    pub async fn run<R: Net>(
        self: Arc<Self>,
        rt: R,
        dns: Option<Dns>,
        shutdown: Arc<rmox_driver::Shutdown>,
    ) {
        let resolve: rmox_driver::fetch::Resolve = match dns {
            Some(d) => {
                let d = Arc::new(d);
                Arc::new(move |lookups| {
                    let d = Arc::clone(&d);
                    Box::pin(async move { d.lookup_many_async(&lookups).await })
                })
            }
            None => Arc::new(|lookups: Vec<rmox_core::dns::Lookup>| {
                Box::pin(async move {
                    lookups
                        .iter()
                        .map(|_| rmox_core::dns::LookupResult::TempFail("no DNS resolver".into()))
                        .collect()
                })
            }),
        };
        let tasks: Vec<_> = self
            .listeners
            .iter()
            .map(|(_, l)| {
                let me = Arc::clone(&self);
                let (l, rt2, resolve) = (Arc::clone(l), rt.clone(), Arc::clone(&resolve));
                let shutdown = Arc::clone(&shutdown);
                rt.spawn(async move {
                    let stop = async {
                        shutdown.wait().await;
                    };
                    me.renew_loop(&rt2, &l, &resolve).or(stop).await;
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
        tracing::info!("acme: renewal stopped");
    }

    /// Orders, stores and swaps listener `l`'s certificate whenever it is due; never ends.
    async fn renew_loop<R: Net>(
        &self,
        rt: &R,
        l: &ListenerAcme,
        resolve: &rmox_driver::fetch::Resolve,
    ) {
        let mut failures = 0u32;
        loop {
            let due = *l.due.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(at) = due {
                // Sleep in steps of at most an hour: the wall clock may jump.
                loop {
                    let now = rmox_driver::now().wall;
                    if now >= at {
                        break;
                    }
                    let left = Duration::from_secs(u64::try_from(at.0 - now.0).unwrap_or(0));
                    rt.sleep_until(Instant::now() + left.min(Duration::from_secs(3600)))
                        .await;
                }
            }
            tracing::info!(listener = %l.label, names = %l.names.join(","), directory = %l.config.directory_url, "acme: ordering a certificate");
            let next = match self.obtain(rt, l, resolve).await {
                Ok((issued, not_after)) => {
                    failures = 0;
                    let at = acme::renew_at(issued, not_after, l.renew_before, self.min_interval);
                    tracing::info!(listener = %l.label, names = %l.names.join(","), not_after = not_after.0, renew_at = at.0, path = %l.cert_path.display(), "acme: certificate obtained and in use");
                    if at <= issued.add(self.min_interval) && l.renew_before > Duration::ZERO {
                        tracing::warn!(listener = %l.label, "acme: renew_before_days is not less than the certificate's lifetime: renewing every limits.acme_min_renew_interval_secs");
                    }
                    at
                }
                Err(e) => {
                    failures += 1;
                    let wait = acme::retry_delay(failures, e.retry_after());
                    tracing::error!(listener = %l.label, names = %l.names.join(","), error = %e, failures, retry_in_secs = wait.as_secs(), "acme: no certificate");
                    rmox_driver::now().wall.add(wait)
                }
            };
            *l.due.lock().unwrap_or_else(|p| p.into_inner()) = Some(next);
        }
    }

    /// One order for `l`: the new certificate stored and served; its issue time and
    /// expiry.
    async fn obtain<R: Net>(
        &self,
        rt: &R,
        l: &ListenerAcme,
        resolve: &rmox_driver::fetch::Resolve,
    ) -> Result<(UnixTime, UnixTime), AcmeError> {
        let Some(key) = &self.key else {
            return Err(AcmeError::Setup("no account key".into()));
        };
        use ring::signature::KeyPair;
        let account = AccountKey::from_uncompressed(key.public_key().as_ref())
            .ok_or_else(|| AcmeError::Setup("the account key is not P-256".into()))?;
        // The certificate's own key and the CSR for its names.
        let cert_key = rcgen::KeyPair::generate().map_err(|e| AcmeError::Setup(e.to_string()))?;
        let csr = rcgen::CertificateParams::new(l.names.clone())
            .and_then(|p| p.serialize_request(&cert_key))
            .map_err(|e| AcmeError::Setup(format!("CSR: {e}")))?;
        let issued = self
            .order(rt, l, key, account, csr.der().to_vec(), resolve)
            .await?;
        let key_pem = cert_key.serialize_pem();
        let ck =
            rmox_core::tls::certified_key_from_pem(issued.chain_pem.as_bytes(), key_pem.as_bytes())
                .map_err(|e| AcmeError::Protocol {
                    url: l.config.directory_url.clone(),
                    why: format!("the issued chain does not fit the key: {e}"),
                })?;
        let not_after = rmox_core::tls::leaf_der(&ck)
            .and_then(acme::x509::validity)
            .map(|(_, na)| na)
            .ok_or_else(|| AcmeError::Protocol {
                url: l.config.directory_url.clone(),
                why: "the issued certificate does not parse".into(),
            })?;
        let (cp, kp, chain) = (
            l.cert_path.clone(),
            l.key_path.clone(),
            issued.chain_pem.clone(),
        );
        let written = rt
            .unblock(Box::new(move || {
                write_private(&kp, key_pem.as_bytes())?;
                write_private(&cp, chain.as_bytes())
            }))
            .await;
        if let Err(e) = written {
            // Served anyway; the next start orders again.
            tracing::error!(listener = %l.label, path = %l.cert_path.display(), error = %e, "acme: storing the certificate failed");
        }
        l.resolver.set_certificate(ck);
        Ok((rmox_driver::now().wall, not_after))
    }

    /// Drives one [`AcmeOrder`] to its end, answering its effects.
    async fn order<R: Net>(
        &self,
        rt: &R,
        l: &ListenerAcme,
        key: &ring::signature::EcdsaKeyPair,
        account: AccountKey,
        csr: Vec<u8>,
        resolve: &rmox_driver::fetch::Resolve,
    ) -> Result<Issued, AcmeError> {
        let rng = ring::rand::SystemRandom::new();
        let mut m = AcmeOrder::new(
            Arc::clone(&l.config),
            account,
            l.names.clone(),
            csr,
            rmox_driver::now(),
        );
        loop {
            let now = rmox_driver::now();
            match m.poll(now) {
                Output::Effect(t, Effect::Fetch(req)) => {
                    let r = rmox_driver::fetch::fetch(
                        rt.clone(),
                        Arc::clone(&l.fetch),
                        &req,
                        Arc::clone(resolve),
                    )
                    .await;
                    tracing::debug!(listener = %l.label, url = %req.url, status = ?r.as_ref().map(|r| r.status), "acme: request");
                    m.handle(
                        rmox_driver::now(),
                        Input::Completed(t, Completion::Fetched(r)),
                    );
                }
                Output::Effect(t, Effect::Sign(data)) => {
                    let c = match key.sign(&rng, &data) {
                        Ok(sig) => Completion::Signed(sig.as_ref().to_vec()),
                        Err(_) => Completion::SignFailed("ECDSA signing failed".into()),
                    };
                    m.handle(now, Input::Completed(t, c));
                }
                Output::Effect(t, Effect::Publish(c)) => {
                    self.publish(l, &c, true)
                        .map_err(|e| AcmeError::Setup(format!("challenge certificate: {e}")))?;
                    tracing::info!(listener = %l.label, name = %c.identifier, challenge = c.kind.name(), "acme: challenge published");
                    m.handle(now, Input::Completed(t, Completion::Published));
                }
                Output::Effect(_, Effect::Unpublish(c)) => {
                    let _ = self.publish(l, &c, false);
                }
                Output::Event(e) => match e {
                    Event::BadNonceRetry { url } => {
                        tracing::debug!(listener = %l.label, %url, "acme: badNonce, signing again")
                    }
                    e => tracing::info!(listener = %l.label, event = ?e, "acme"),
                },
                Output::Idle { deadline, .. } => {
                    // An order always has a deadline (its timeout); without one there is
                    // nothing to wait for, which the machine never asks.
                    let Some(d) = deadline else {
                        return Err(AcmeError::Setup("order stalled".into()));
                    };
                    if now.mono < d {
                        rt.sleep_until(d).await;
                    }
                    m.handle(rmox_driver::now(), Input::Timeout);
                }
                Output::Done => {
                    return m
                        .take_result()
                        .unwrap_or(Err(AcmeError::Setup("order ended without result".into())))
                }
            }
        }
    }

    /// Publishes (`on`) or takes away a challenge.
    fn publish(&self, l: &ListenerAcme, c: &Challenge, on: bool) -> Result<(), String> {
        match c.kind {
            ChallengeKind::TlsAlpn01 => {
                let ck = if on {
                    Some(challenge_certificate(c)?)
                } else {
                    None
                };
                l.resolver.set_challenge(&c.identifier, ck);
            }
            ChallengeKind::Http01 => self
                .http01
                .set(&c.token, on.then(|| c.key_authorization.clone())),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The account key is made once and read back the same; a key file that is not a
    /// P-256 PKCS#8 key is an error naming the file.
    #[test]
    fn account_key_kept() {
        use ring::signature::KeyPair;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("account.key");
        let a = account_key(&p).unwrap();
        let b = account_key(&p).unwrap();
        assert_eq!(a.public_key().as_ref(), b.public_key().as_ref());
        assert!(AccountKey::from_uncompressed(a.public_key().as_ref()).is_some());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        std::fs::write(&p, "junk").unwrap();
        let e = account_key(&p).unwrap_err();
        assert!(e.contains("account.key"), "{e}");
    }

    /// The tls-alpn-01 certificate is for the name and carries the acmeIdentifier
    /// extension with the key authorization's digest (RFC 8737 3), marked critical.
    #[test]
    fn challenge_certificate_extension() {
        let c = Challenge {
            kind: ChallengeKind::TlsAlpn01,
            identifier: "mail.example.org".into(),
            token: "tok".into(),
            key_authorization: "tok.thumb".into(),
        };
        let ck = challenge_certificate(&c).unwrap();
        let der = rmox_core::tls::leaf_der(&ck).unwrap();
        // WebPKI refuses the unknown critical extension, so the name is looked for as is
        // (the SAN dNSName).
        let san = b"\x82\x10mail.example.org";
        assert!(der.windows(san.len()).any(|w| w == san));
        // OID 1.3.6.1.5.5.7.1.31, critical TRUE, OCTET STRING { OCTET STRING (32) digest }.
        let mut want = vec![
            0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x1f, 0x01, 0x01, 0xff, 0x04,
            0x22, 0x04, 0x20,
        ];
        want.extend_from_slice(&c.key_authorization_digest());
        assert!(der.windows(want.len()).any(|w| w == want.as_slice()));
    }

    /// A stored certificate is used when it covers the names and has not expired; else a
    /// new one is ordered.
    #[test]
    fn stored_certificate_checks() {
        let dir = tempfile::tempdir().unwrap();
        let (cp, kp) = (dir.path().join("a.crt"), dir.path().join("a.key"));
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p =
            rcgen::CertificateParams::new(vec!["a.example".into(), "b.example".into()]).unwrap();
        p.not_after = rcgen::date_time_ymd(2040, 1, 1);
        let cert = p.self_signed(&key).unwrap();
        std::fs::write(&cp, cert.pem()).unwrap();
        std::fs::write(&kp, key.serialize_pem()).unwrap();
        let now = UnixTime(1_800_000_000);
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (_, na) = stored(&cp, &kp, &names(&["a.example"]), now).unwrap();
        assert_eq!(na, UnixTime::from_civil(2040, 1, 1, 0, 0, 0).unwrap());
        assert!(stored(&cp, &kp, &names(&["a.example", "b.example"]), now).is_some());
        assert!(stored(&cp, &kp, &names(&["c.example"]), now).is_none());
        assert!(stored(&cp, &kp, &names(&["a.example"]), UnixTime(2_300_000_000)).is_none());
        std::fs::write(&kp, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
        assert!(
            stored(&cp, &kp, &names(&["a.example"]), now).is_none(),
            "key of another certificate"
        );
    }
}
