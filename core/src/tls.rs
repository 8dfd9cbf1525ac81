//! TLS as one more sans-IO layer: every rustls call of the crate lives here.
//!
//! A [`TlsLayer`] wraps a rustls connection (server or client side). The session feeds it
//! ciphertext from the peer, reads decrypted plaintext out, writes plaintext in and takes
//! ciphertext to transmit. rustls' buffer API is still moving upstream, which is why no
//! other module touches it.

use std::io::{Read, Write};
use std::sync::Arc;

/// Why the TLS layer failed. The session cannot continue after any of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The peer sent something that is not valid TLS, or the handshake failed (certificate
    /// refused, no common cipher, bad record).
    #[error("tls: {0}")]
    Protocol(#[from] rustls::Error),
    /// The TLS configuration cannot make a connection (e.g. an invalid server name).
    #[error("tls setup: {0}")]
    Setup(String),
}

/// A TLS failure as a client reports it: why, in the terms a TLS report (RFC 8460) uses,
/// and the TLS layer's description.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct TlsFailure {
    /// Why, as far as the certificate check says.
    pub reason: TlsFailureReason,
    /// The TLS layer's description (rustls' text).
    pub detail: String,
}

/// Why a TLS connection failed, for the TLS report's result type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsFailureReason {
    /// The certificate has expired (`certificate-expired`).
    CertificateExpired,
    /// The certificate is not valid for the host name (`certificate-host-mismatch`).
    CertificateHostMismatch,
    /// The chain does not lead to a trusted root, or a signature in it is wrong
    /// (`certificate-not-trusted`).
    CertificateNotTrusted,
    /// Anything else: another certificate problem, DANE, a bad record, no common cipher,
    /// the configuration (`validation-failure`).
    Other,
}

impl From<&TlsError> for TlsFailure {
    fn from(e: &TlsError) -> TlsFailure {
        use rustls::CertificateError as C;
        let reason = match e {
            TlsError::Protocol(rustls::Error::InvalidCertificate(c)) => match c {
                C::Expired | C::ExpiredContext { .. } => TlsFailureReason::CertificateExpired,
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    TlsFailureReason::CertificateHostMismatch
                }
                C::UnknownIssuer | C::BadSignature => TlsFailureReason::CertificateNotTrusted,
                // A self-signed CA certificate presented as the server's own: no chain to a
                // trusted root can be built from it (what other verifiers call an unknown
                // authority).
                C::Other(o)
                    if matches!(
                        o.0.downcast_ref::<webpki::Error>(),
                        Some(webpki::Error::CaUsedAsEndEntity)
                    ) =>
                {
                    TlsFailureReason::CertificateNotTrusted
                }
                _ => TlsFailureReason::Other,
            },
            _ => TlsFailureReason::Other,
        };
        TlsFailure {
            reason,
            detail: e.to_string(),
        }
    }
}

/// Facts about an established TLS connection, for logs and Received headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// Protocol version, e.g. `TLSv1.3`.
    pub version: String,
    /// Cipher suite, e.g. `TLS13_AES_128_GCM_SHA256`.
    pub cipher: String,
    /// Server name the client asked for (server side), if any.
    pub sni: Option<String>,
}

/// A rustls connection driven with byte buffers.
pub struct TlsLayer {
    conn: rustls::Connection,
}

impl std::fmt::Debug for TlsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsLayer")
            .field("handshaking", &self.conn.is_handshaking())
            .finish()
    }
}

impl TlsLayer {
    /// Server side of a connection.
    pub fn server(config: Arc<rustls::ServerConfig>) -> Result<TlsLayer, TlsError> {
        let mut conn = rustls::ServerConnection::new(config)?;
        // The machine bounds what it queues; rustls' default 64 KiB limit would make
        // write_plain drop the rest (see write_plain).
        conn.set_buffer_limit(None);
        Ok(TlsLayer { conn: conn.into() })
    }

    /// Client side of a connection to `server_name` (a DNS name or an IP address).
    pub fn client(
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> Result<TlsLayer, TlsError> {
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|e| TlsError::Setup(format!("server name {server_name:?}: {e}")))?;
        let mut conn = rustls::ClientConnection::new(config, name)?;
        // A whole message is queued at once (see write_plain).
        conn.set_buffer_limit(None);
        Ok(TlsLayer { conn: conn.into() })
    }

    /// Feeds ciphertext from the peer, appends any decrypted plaintext to `plain`. Returns the
    /// number of input bytes consumed (rustls may refuse more while its buffers are full).
    pub fn feed(&mut self, mut input: &[u8], plain: &mut Vec<u8>) -> Result<usize, TlsError> {
        let total = input.len();
        while !input.is_empty() {
            let n = match self.conn.read_tls(&mut input) {
                Ok(0) => break,
                Ok(n) => n,
                // rustls refuses more input while its plaintext buffer is full: drain it first.
                Err(_) => {
                    self.process(plain)?;
                    match self.conn.read_tls(&mut input) {
                        Ok(n) if n > 0 => n,
                        _ => break,
                    }
                }
            };
            let _ = n;
            self.process(plain)?;
        }
        Ok(total - input.len())
    }

    fn process(&mut self, plain: &mut Vec<u8>) -> Result<(), TlsError> {
        let state = self.conn.process_new_packets()?;
        let avail = state.plaintext_bytes_to_read();
        if avail > 0 {
            let start = plain.len();
            plain.resize(start + avail, 0);
            let got = self
                .conn
                .reader()
                .read(&mut plain[start..])
                .unwrap_or_default();
            plain.truncate(start + got);
        }
        Ok(())
    }

    /// Queues plaintext for the peer (buffered by rustls until the handshake completes).
    pub fn write_plain(&mut self, data: &[u8]) {
        // Writing to rustls' in-memory buffer cannot fail except on a closed connection,
        // in which case the data is dropped with the connection anyway. The buffer limit is
        // off (set in the constructors): with rustls' default of 64 KiB, `write_all` stopped
        // at the limit and a larger message was silently truncated.
        let _ = self.conn.writer().write_all(data);
    }

    /// Appends ciphertext waiting to be sent to `out`.
    pub fn take_ciphertext(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            match self.conn.write_tls(out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Sends a close_notify alert (taken with the next [`TlsLayer::take_ciphertext`]).
    pub fn close(&mut self) {
        self.conn.send_close_notify();
    }

    /// Whether the handshake is still in progress.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The `tls-exporter` channel binding value (RFC 9266), once the handshake is done.
    pub fn channel_binding(&self) -> Option<Vec<u8>> {
        if self.conn.is_handshaking() {
            return None;
        }
        self.conn
            .export_keying_material(
                [0u8; crate::sasl::TLS_EXPORTER_LEN],
                crate::sasl::TLS_EXPORTER_LABEL.as_bytes(),
                None,
            )
            .ok()
            .map(|k| k.to_vec())
    }

    /// Version, cipher and SNI of the established connection.
    pub fn info(&self) -> Option<TlsInfo> {
        let version = self.conn.protocol_version()?;
        let cipher = self.conn.negotiated_cipher_suite()?;
        let sni = match &self.conn {
            rustls::Connection::Server(s) => s.server_name().map(str::to_string),
            rustls::Connection::Client(_) => None,
        };
        Some(TlsInfo {
            version: match version {
                rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_string(),
                rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_string(),
                v => format!("{v:?}"),
            },
            cipher: format!("{:?}", cipher.suite()),
            sni,
        })
    }
}

/// The process-wide crypto provider (ring), for building configs.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server config from a certificate chain and key in PEM form.
pub fn server_config_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Setup(format!("certificate: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Setup("no certificate in PEM".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| TlsError::Setup(format!("private key: {e}")))?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(cfg))
}

// ---- Server side: certificates that change while serving (ACME) ----

/// A certificate chain with its private key, ready to serve.
pub type CertifiedKey = Arc<rustls::sign::CertifiedKey>;

/// A certificate chain and key from PEM text (the key PKCS#8, PKCS#1 or SEC1).
pub fn certified_key_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let ck = certified_key_unchecked(cert_pem, key_pem)?;
    // The key must belong to the leaf certificate.
    ck.keys_match()?;
    Ok(ck)
}

/// As [`certified_key_from_pem`] without checking that the key belongs to the leaf: for
/// a `tls-alpn-01` certificate made a moment ago, which WebPKI cannot parse (its critical
/// `acmeIdentifier` extension is unknown to it).
pub fn certified_key_unchecked(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Setup(format!("certificate: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Setup("no certificate in PEM".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| TlsError::Setup(format!("private key: {e}")))?;
    let key = provider().key_provider.load_private_key(key)?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(certs, key)))
}

/// The DER of the leaf certificate of a certified key.
pub fn leaf_der(ck: &CertifiedKey) -> Option<&[u8]> {
    ck.cert.first().map(|c| c.as_ref())
}

/// Chooses the certificate of each TLS connection of a listener whose certificate comes
/// from ACME: the current certificate (replaced while serving, without a restart), or, for a
/// client offering ALPN `acme-tls/1` (RFC 8737: the CA validating a `tls-alpn-01`
/// challenge), the challenge certificate of the name it asks for (SNI); no certificate (the
/// handshake fails) when there is none.
#[derive(Default)]
pub struct CertResolver {
    current: std::sync::RwLock<Option<CertifiedKey>>,
    challenges: std::sync::RwLock<std::collections::BTreeMap<String, CertifiedKey>>,
}

impl std::fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertResolver").finish_non_exhaustive()
    }
}

impl CertResolver {
    /// Serves `ck` from the next handshake on.
    pub fn set_certificate(&self, ck: CertifiedKey) {
        // A poisoned lock still holds a valid value: writers only assign.
        match self.current.write() {
            Ok(mut g) => *g = Some(ck),
            Err(p) => *p.into_inner() = Some(ck),
        }
    }

    /// The certificate served now.
    pub fn certificate(&self) -> Option<CertifiedKey> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Serves `ck` to `acme-tls/1` clients asking for `name` (`None` takes it away).
    pub fn set_challenge(&self, name: &str, ck: Option<CertifiedKey>) {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let mut g = match self.challenges.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match ck {
            Some(ck) => g.insert(name, ck),
            None => g.remove(&name),
        };
    }

    fn challenge(&self, name: &str) -> Option<CertifiedKey> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        match self.challenges.read() {
            Ok(g) => g.get(&name).cloned(),
            Err(p) => p.into_inner().get(&name).cloned(),
        }
    }
}

impl rustls::server::ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<CertifiedKey> {
        let acme = hello
            .alpn()
            .is_some_and(|mut a| a.any(|p| p == crate::acme::ALPN_PROTOCOL));
        if acme {
            return self.challenge(hello.server_name()?);
        }
        self.certificate()
    }
}

/// A server config whose certificates come from `resolver`, negotiating ALPN
/// `acme-tls/1` for `tls-alpn-01` validations besides the protocols in `alpn` (e.g.
/// `http/1.1` on an HTTPS port). A client that offers ALPN protocols none of which is in
/// the list is refused (rustls' rule), so `alpn` should name the port's protocol.
pub fn server_config_with_resolver(
    resolver: Arc<CertResolver>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    cfg.alpn_protocols.push(crate::acme::ALPN_PROTOCOL.to_vec());
    Ok(Arc::new(cfg))
}

// ---- Client side: certificate verification for outgoing SMTP ----

/// A DANE TLSA record (RFC 6698), as handed to the client by the caller who looked it up
/// (DNSSEC-validated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tlsa {
    /// Certificate usage: 2 (DANE-TA) and 3 (DANE-EE) are used for SMTP (RFC 7672); others
    /// are ignored.
    pub usage: u8,
    /// Selector: 0 the full certificate, 1 the SubjectPublicKeyInfo.
    pub selector: u8,
    /// Matching type: 0 exact, 1 SHA-256, 2 SHA-512.
    pub matching: u8,
    /// Certificate association data.
    pub data: Vec<u8>,
}

impl Tlsa {
    /// The association data of `cert` (DER) for a selector and matching type; `None` for
    /// an unknown selector or matching type, or a certificate that does not parse.
    fn association(selector: u8, matching: u8, cert: &[u8]) -> Option<Vec<u8>> {
        let selected: Vec<u8> = match selector {
            0 => cert.to_vec(),
            1 => {
                let der = CertificateDer::from(cert);
                let c = webpki::EndEntityCert::try_from(&der).ok()?;
                // The whole SubjectPublicKeyInfo DER, outer SEQUENCE included (checked
                // against rcgen's public_key_der in client tests).
                c.subject_public_key_info().as_ref().to_vec()
            }
            _ => return None,
        };
        let digest = |alg| ring::digest::digest(alg, &selected).as_ref().to_vec();
        match matching {
            0 => Some(selected),
            1 => Some(digest(&ring::digest::SHA256)),
            2 => Some(digest(&ring::digest::SHA512)),
            _ => None,
        }
    }

    /// Whether `cert` (DER) matches this record's selector, matching type and data.
    pub fn matches(&self, cert: &[u8]) -> bool {
        // Public data: no need for constant time.
        Tlsa::association(self.selector, self.matching, cert).is_some_and(|v| v == self.data)
    }

    /// The record for a certificate (DER), e.g. `3 1 1` for our own certificate (what
    /// `rmox dane makerecord` prints); `None` as for [`Tlsa::matches`].
    pub fn for_certificate(usage: u8, selector: u8, matching: u8, cert: &[u8]) -> Option<Tlsa> {
        Some(Tlsa {
            usage,
            selector,
            matching,
            data: Tlsa::association(selector, matching, cert)?,
        })
    }
}

/// The DNS names in a certificate's subject alternative names (DER certificate; empty
/// when it does not parse). For display and defaults only, never for verification.
pub fn certificate_dns_names(cert: &[u8]) -> Vec<String> {
    let der = CertificateDer::from(cert);
    match webpki::EndEntityCert::try_from(&der) {
        Ok(c) => c.valid_dns_names().map(str::to_string).collect(),
        Err(_) => Vec::new(),
    }
}

/// Presentation form: `3 1 1 0123ab...` (lower-case hex).
impl std::fmt::Display for Tlsa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {} ", self.usage, self.selector, self.matching)?;
        for b in &self.data {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// How the client checks the server's certificate.
#[derive(Clone, Debug)]
pub enum ClientVerify {
    /// Accept any certificate (opportunistic TLS, RFC 7435; or verification errors to be
    /// ignored, `TLS-Required: No`). Handshake signatures are still checked.
    AcceptAny,
    /// DANE (RFC 7672): the certificate must match one of these TLSA records (usage 3:
    /// the end-entity certificate, no name or expiry check; usage 2: a trust anchor in the
    /// presented chain, then PKIX path and name validation from that anchor).
    Dane(Vec<Tlsa>),
    /// DANE as [`ClientVerify::Dane`], where a DANE-TA chain may also match one of these
    /// names besides the server name (SNI): RFC 7672 3.2.2's reference identifiers, the
    /// TLSA base domain and the MX host name before CNAME expansion
    /// ([`crate::tlspolicy::DaneSecure::names`]).
    DaneNames(Vec<Tlsa>, Vec<String>),
    /// PKIX (WebPKI path and name validation) from these trusted roots.
    Pkix(Arc<rustls::RootCertStore>),
    /// Verify as the inner mode says, but let the handshake go on when that fails: the
    /// failure is kept in the [`VerifyReport`] for the TLS report (RFC 8460) of a
    /// connection that is used anyway (MTA-STS `testing`, `TLS-Required: No`).
    Report(Box<ClientVerify>, VerifyReport),
}

/// Where a [`ClientVerify::Report`] verifier keeps the failure it let through. Made for one
/// connection: its config must not be shared with another.
#[derive(Clone, Debug, Default)]
pub struct VerifyReport(Arc<std::sync::Mutex<Option<TlsFailure>>>);

impl VerifyReport {
    /// The verification failure of the handshake, if it failed.
    pub fn failure(&self) -> Option<TlsFailure> {
        // A poisoned lock still holds the last value written.
        match self.0.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn set(&self, f: TlsFailure) {
        match self.0.lock() {
            Ok(mut g) => *g = Some(f),
            Err(p) => *p.into_inner() = Some(f),
        }
    }
}

/// The trusted roots in `pem` (CA certificates), for [`ClientVerify::Pkix`]; `Err` when the
/// bundle has none.
pub fn pkix_roots_from_pem(pem: &[u8]) -> Result<Arc<rustls::RootCertStore>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err("no certificates".into());
    }
    Ok(Arc::new(roots))
}

/// A PKIX client config (WebPKI path and name validation) trusting the CA certificates in
/// `pem`: verified TLS for REQUIRETLS, smarthosts and submission. `Err` says why not (no
/// certificate in the bundle).
pub fn pkix_config_from_pem(pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = pkix_roots_from_pem(pem)?;
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// A client config for outgoing SMTP with the given verification (PKIX is a caller-built
/// `rustls::ClientConfig` with its roots, used as is).
pub fn client_config(verify: ClientVerify) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = provider();
    let verifier = verifier(verify, &provider)?;
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

fn verifier(
    verify: ClientVerify,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
    let provider = Arc::clone(provider);
    Ok(match verify {
        ClientVerify::AcceptAny => Arc::new(AnyCert { provider }),
        ClientVerify::Dane(records) => Arc::new(DaneVerifier {
            provider,
            records,
            names: Vec::new(),
        }),
        ClientVerify::DaneNames(records, names) => Arc::new(DaneVerifier {
            provider,
            records,
            names,
        }),
        ClientVerify::Pkix(roots) => {
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| TlsError::Setup(format!("pkix verifier: {e}")))?
        }
        ClientVerify::Report(inner, report) => Arc::new(Reporting {
            inner: verifier(*inner, &provider)?,
            report,
        }),
    })
}

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime as TlsTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

fn tls12_sig(
    p: &rustls::crypto::CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls12_signature(message, cert, dss, &p.signature_verification_algorithms)
}

fn tls13_sig(
    p: &rustls::crypto::CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(message, cert, dss, &p.signature_verification_algorithms)
}

/// Accepts any certificate; checks handshake signatures.
#[derive(Debug)]
struct AnyCert {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: TlsTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_sig(&self.provider, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_sig(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Runs another verifier; a certificate it refuses is accepted all the same, the refusal
/// kept for the TLS report. Handshake signatures are checked as the inner verifier does.
#[derive(Debug)]
struct Reporting {
    inner: Arc<dyn ServerCertVerifier>,
    report: VerifyReport,
}

impl ServerCertVerifier for Reporting {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: TlsTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(v) => Ok(v),
            Err(e) => {
                self.report.set(TlsFailure::from(&TlsError::Protocol(e)));
                Ok(ServerCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// DANE verification inside the handshake.
#[derive(Debug)]
struct DaneVerifier {
    provider: Arc<rustls::crypto::CryptoProvider>,
    records: Vec<Tlsa>,
    /// More reference identifiers for DANE-TA, besides the server name.
    names: Vec<String>,
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: TlsTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // DANE-EE: the end-entity certificate itself; name and validity are not checked
        // (RFC 7672 3.1.1).
        if self
            .records
            .iter()
            .any(|r| r.usage == 3 && r.matches(end_entity.as_ref()))
        {
            return Ok(ServerCertVerified::assertion());
        }
        // DANE-TA: an anchor in the presented chain, then a normal path check from it.
        let mut last = None;
        for r in self.records.iter().filter(|r| r.usage == 2) {
            for ta in intermediates.iter().chain(std::iter::once(end_entity)) {
                if !r.matches(ta.as_ref()) {
                    continue;
                }
                let mut roots = rustls::RootCertStore::empty();
                if roots.add(ta.clone().into_owned()).is_err() {
                    continue;
                }
                let v = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&self.provider),
                )
                .build()
                .map_err(|e| rustls::Error::General(format!("dane-ta verifier: {e}")))?;
                let extra = self
                    .names
                    .iter()
                    .filter_map(|n| ServerName::try_from(n.as_str()).ok());
                for name in std::iter::once(server_name.clone()).chain(extra) {
                    match v.verify_server_cert(end_entity, intermediates, &name, ocsp_response, now)
                    {
                        Ok(ok) => return Ok(ok),
                        Err(e) => last = Some(e),
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            rustls::Error::General("dane: no TLSA record matches the certificate".into())
        }))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_sig(&self.provider, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_sig(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    /// Moves ciphertext both ways until neither side has anything to send; returns the
    /// plaintext each side received (client, server).
    fn pump(c: &mut TlsLayer, s: &mut TlsLayer) -> (Vec<u8>, Vec<u8>) {
        let (mut at_c, mut at_s) = (Vec::new(), Vec::new());
        for _ in 0..10_000 {
            let (mut c2s, mut s2c) = (Vec::new(), Vec::new());
            c.take_ciphertext(&mut c2s);
            s.take_ciphertext(&mut s2c);
            if c2s.is_empty() && s2c.is_empty() {
                return (at_c, at_s);
            }
            let mut off = 0;
            while off < c2s.len() {
                off += s.feed(&c2s[off..], &mut at_s).unwrap();
            }
            let mut off = 0;
            while off < s2c.len() {
                off += c.feed(&s2c[off..], &mut at_c).unwrap();
            }
        }
        panic!("TLS pump did not settle");
    }

    /// DANE-TA checks the chain's name against the SNI and the extra reference names
    /// (RFC 7672 3.2.2: with a CNAME-expanded TLSA base domain as SNI, a certificate for
    /// the MX host name as published is valid too); a name in neither fails.
    #[test]
    fn dane_ta_reference_names() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["mx.original.example".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        let chain = format!("{}{}", leaf.pem(), ca.pem());
        let srv =
            server_config_from_pem(chain.as_bytes(), leaf_key.serialize_pem().as_bytes()).unwrap();
        let ta = Tlsa {
            usage: 2,
            selector: 1,
            matching: 1,
            data: ring::digest::digest(&ring::digest::SHA256, &ca_key.public_key_der())
                .as_ref()
                .to_vec(),
        };
        let cases = [
            (
                ClientVerify::Dane(vec![ta.clone()]),
                "mx.original.example",
                true,
            ),
            (
                ClientVerify::Dane(vec![ta.clone()]),
                "b.host.example",
                false,
            ),
            (
                ClientVerify::DaneNames(
                    vec![ta.clone()],
                    vec!["b.host.example".into(), "mx.original.example".into()],
                ),
                "b.host.example",
                true,
            ),
            (
                ClientVerify::DaneNames(vec![ta.clone()], vec!["other.example".into()]),
                "b.host.example",
                false,
            ),
        ];
        for (verify, sni, ok) in cases {
            let name = format!("{verify:?} sni={sni}");
            let mut c = TlsLayer::client(client_config(verify).unwrap(), sni).unwrap();
            let mut s = TlsLayer::server(Arc::clone(&srv)).unwrap();
            let mut failed = false;
            for _ in 0..20 {
                let (mut c2s, mut s2c) = (Vec::new(), Vec::new());
                c.take_ciphertext(&mut c2s);
                s.take_ciphertext(&mut s2c);
                if c2s.is_empty() && s2c.is_empty() {
                    break;
                }
                let mut sink = Vec::new();
                if s.feed(&c2s, &mut sink).is_err() || c.feed(&s2c, &mut sink).is_err() {
                    failed = true;
                    break;
                }
            }
            assert_eq!(!failed && !c.is_handshaking(), ok, "{name}");
        }
    }

    /// A record made for a certificate matches it, and its presentation form is the one
    /// DNS zone files use; selector 1 hashes the whole SubjectPublicKeyInfo DER.
    #[test]
    fn tlsa_for_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["mail.mox.example".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = cert.der().to_vec();
        let r = Tlsa::for_certificate(3, 1, 1, &der).unwrap();
        let want = ring::digest::digest(&ring::digest::SHA256, &key.public_key_der());
        assert_eq!(r.data, want.as_ref());
        assert!(r.matches(&der));
        let hex: String = want.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(r.to_string(), format!("3 1 1 {hex}"));
        for (s, m) in [(0, 0), (0, 1), (1, 2), (1, 0)] {
            let r = Tlsa::for_certificate(3, s, m, &der).unwrap();
            assert!(r.matches(&der), "{s} {m}");
        }
        assert_eq!(Tlsa::for_certificate(3, 2, 1, &der), None);
        assert_eq!(Tlsa::for_certificate(3, 1, 3, &der), None);
        assert_eq!(Tlsa::for_certificate(3, 1, 1, b"junk"), None);
    }

    /// Regression: rustls' default 64 KiB send buffer limit made `write_plain` drop
    /// everything past it, so a message larger than that sent over STARTTLS lost its end
    /// (found by the aiosmtpd interop test with a 2 MiB message: the server never saw the
    /// final dot). Every byte written must come out on the other side, before and after
    /// the handshake, from both sides.
    #[test]
    fn large_writes_are_not_truncated() {
        for (before, len) in [
            (true, 3 << 20),
            (false, 3 << 20),
            (false, 64 << 10),
            (true, 1),
        ] {
            let mut c = TlsLayer::client(testkit::client_tls(), "mox.example").unwrap();
            let mut s = TlsLayer::server(testkit::server_tls()).unwrap();
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            if before {
                c.write_plain(&data);
                s.write_plain(&data);
            } else {
                pump(&mut c, &mut s);
                assert!(!c.is_handshaking() && !s.is_handshaking());
                c.write_plain(&data);
                s.write_plain(&data);
            }
            let (at_c, at_s) = pump(&mut c, &mut s);
            assert_eq!(at_s.len(), data.len(), "client to server, before={before}");
            assert!(at_s == data, "client to server content, before={before}");
            assert_eq!(at_c.len(), data.len(), "server to client, before={before}");
            assert!(at_c == data, "server to client content, before={before}");
        }
    }
}
