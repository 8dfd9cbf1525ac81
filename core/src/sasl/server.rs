//! The server side of every mechanism: one small machine per AUTH exchange.
//!
//! The SMTP session creates a [`ServerAuth`] when it accepts `AUTH mech`, calls
//! [`ServerAuth::start`] with the decoded initial response, and then answers each
//! [`ServerStep`] until `Success` or `Failure`:
//!
//! | step | the session does | then calls |
//! | --- | --- | --- |
//! | `Challenge(data)` | sends `334 base64(data)` | `respond(decoded reply)` |
//! | `CheckPassword` | checks the password (an effect) | `password_checked(ok)` |
//! | `NeedCredentials` | loads the user's stored secret (an effect) | `credentials(found)` |
//! | `Success` | for SCRAM sends `334 base64(final_data)`, waits for an empty line; then 235 | - |
//! | `Failure(f)` | replies with [`AuthFailure::smtp_code`] | - |
//!
//! Unknown users are not revealed early: `credentials(None)` continues a SCRAM exchange with
//! fake values (a salt derived from the user name and a key, see
//! [`ServerAuth::set_unknown_user_params`]) and fails only after the client's proof.

use super::cram::parse_hex_digest;
use super::scram::{
    self, b64_decode, b64_encode, ct_eq, decode_saslname, expect_attr, valid_extensions,
    valid_nonce, ScramCredentials, ScramHash, SCRAM_DEFAULT_ITERATIONS,
};
use super::{CredentialKind, Mechanism, StoredCredentials};
use crate::Rng;

/// Why an exchange failed. [`AuthFailure::is_malformed`] separates syntax errors (501) from
/// refusals (535).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthFailure {
    /// The client's message does not follow the mechanism's syntax; the text says which
    /// part. SMTP: 501 5.5.2.
    #[error("malformed SASL message: {0}")]
    Malformed(&'static str),
    /// Unknown user, wrong password or wrong proof (indistinguishable on purpose).
    /// SMTP: 535 5.7.8.
    #[error("invalid credentials")]
    BadCredentials,
    /// The channel binding data (`c=`) does not match this TLS connection, or the gs2 flag
    /// does not fit the mechanism (`p=` with a non-PLUS mechanism, `n`/`y` with a PLUS one).
    #[error("channel binding mismatch")]
    ChannelBindingMismatch,
    /// A -PLUS mechanism without TLS channel binding data, or a channel binding type other
    /// than `tls-exporter`.
    #[error("channel binding unavailable or unsupported type")]
    ChannelBindingUnsupported,
    /// The client says (gs2 flag `y`) it supports channel binding and thinks the server does
    /// not, while the server advertises -PLUS: someone removed it from the list.
    #[error("channel binding downgrade detected")]
    Downgrade,
    /// An authorization identity different from the authentication identity was asked for;
    /// rmox does not support acting as another user.
    #[error("authorization identity differs from authentication identity")]
    AuthzidNotSupported,
    /// The client sent a mandatory SCRAM extension (`m=`) that is not supported.
    #[error("unsupported mandatory SCRAM extension")]
    UnsupportedExtension,
    /// The SCRAM client-final nonce is not the one the server sent.
    #[error("SCRAM nonce mismatch")]
    NonceMismatch,
    /// The session called a method that does not answer the last step (a bug in the
    /// caller, or a call after the exchange ended).
    #[error("SASL method called out of order")]
    OutOfOrder,
}

impl AuthFailure {
    /// Whether the client's message was syntactically malformed (reply 501 5.5.2 rather
    /// than 535 5.7.8).
    pub fn is_malformed(&self) -> bool {
        matches!(self, AuthFailure::Malformed(_))
    }

    /// The SMTP reply code and enhanced status code for this failure: `(501, "5.5.2")` for
    /// malformed messages, `(454, "4.7.0")` for [`AuthFailure::OutOfOrder`] (our fault),
    /// `(535, "5.7.8")` otherwise.
    pub fn smtp_code(&self) -> (u16, &'static str) {
        match self {
            AuthFailure::Malformed(_) => (501, "5.5.2"),
            AuthFailure::OutOfOrder => (454, "4.7.0"),
            _ => (535, "5.7.8"),
        }
    }
}

/// What the session must do next.
#[derive(Clone, PartialEq, Eq)]
pub enum ServerStep {
    /// Send this as a 334 challenge and wait for the response.
    Challenge(Vec<u8>),
    /// PLAIN/LOGIN: verify this password (an effect in the session machine), then call
    /// [`ServerAuth::password_checked`].
    CheckPassword {
        /// The authentication identity.
        username: String,
        /// The password as sent.
        password: String,
    },
    /// CRAM-MD5/SCRAM: fetch the stored credentials of this user, then call
    /// [`ServerAuth::credentials`].
    NeedCredentials {
        /// The authentication identity.
        username: String,
        /// Which credentials are needed.
        kind: CredentialKind,
    },
    /// Authenticated. For SCRAM, `final_data` (server-final-message `v=...`) must be sent
    /// as a 334 challenge and an empty response awaited before the 235 (RFC 4954 4).
    Success {
        /// The authenticated user.
        username: String,
        /// SCRAM's server-final-message.
        final_data: Option<Vec<u8>>,
    },
    /// Failed; reply with [`AuthFailure::smtp_code`].
    Failure(AuthFailure),
}

impl std::fmt::Debug for ServerStep {
    /// Like a derived `Debug`, but never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerStep::Challenge(c) => f
                .debug_tuple("Challenge")
                .field(&String::from_utf8_lossy(c))
                .finish(),
            ServerStep::CheckPassword { username, .. } => f
                .debug_struct("CheckPassword")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            ServerStep::NeedCredentials { username, kind } => f
                .debug_struct("NeedCredentials")
                .field("username", username)
                .field("kind", kind)
                .finish(),
            ServerStep::Success {
                username,
                final_data,
            } => f
                .debug_struct("Success")
                .field("username", username)
                .field(
                    "final_data",
                    &final_data.as_ref().map(|d| String::from_utf8_lossy(d)),
                )
                .finish(),
            ServerStep::Failure(e) => f.debug_tuple("Failure").field(e).finish(),
        }
    }
}

/// The gs2 channel binding flag of a SCRAM client-first-message.
#[derive(Clone, Debug, PartialEq, Eq)]
enum CbFlag {
    /// `n`: the client does not support channel binding.
    No,
    /// `y`: the client supports it but thinks the server does not.
    ClientOnly,
    /// `p=name`: the client uses channel binding type `name`.
    Used,
}

/// A parsed SCRAM client-first-message.
#[derive(Clone, Debug)]
struct ScramFirst {
    hash: ScramHash,
    gs2_header: String,
    cb: CbFlag,
    username: String,
    bare: String,
    client_nonce: String,
}

/// Waiting for the SCRAM client-final-message.
#[derive(Clone, Debug)]
struct ScramPending {
    first: ScramFirst,
    server_first: String,
    creds: ScramCredentials,
    known: bool,
}

#[derive(Clone, Debug)]
enum State {
    Start,
    PlainAwait,
    LoginUser,
    LoginPass { username: String },
    CheckingPassword { username: String },
    CramAwait,
    CramCreds { username: String, digest: [u8; 16] },
    ScramFirstAwait,
    ScramCreds(ScramFirst),
    ScramFinalAwait(Box<ScramPending>),
    Done,
}

/// The server side of one AUTH exchange.
#[derive(Clone)]
pub struct ServerAuth {
    mech: Mechanism,
    channel_binding: Option<Vec<u8>>,
    plus_advertised: bool,
    /// SCRAM: the server nonce part. CRAM-MD5: the whole challenge.
    nonce: String,
    fake_salt_key: Vec<u8>,
    fake_iterations: u32,
    state: State,
}

impl std::fmt::Debug for ServerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerAuth")
            .field("mech", &self.mech)
            .field("has_channel_binding", &self.channel_binding.is_some())
            .field("plus_advertised", &self.plus_advertised)
            .finish_non_exhaustive()
    }
}

/// Length of the random part of a server nonce, before base64.
const NONCE_RANDOM_LEN: usize = 18;

impl ServerAuth {
    /// A new exchange for `mech`.
    ///
    /// * `rng`: draws the SCRAM server nonce or the CRAM-MD5 challenge.
    /// * `hostname`: used in the CRAM-MD5 challenge `<random.random@hostname>`, and as the
    ///   default key for unknown users' fake salts.
    /// * `channel_binding`: the `tls-exporter` value (32 bytes from
    ///   `export_keying_material`, label [`super::TLS_EXPORTER_LABEL`], no context) when TLS
    ///   is active. Its presence also means the server advertises -PLUS (for downgrade
    ///   detection); override with [`ServerAuth::set_plus_advertised`].
    pub fn new(
        mech: Mechanism,
        rng: &mut Rng,
        hostname: &str,
        channel_binding: Option<Vec<u8>>,
    ) -> ServerAuth {
        let nonce = if mech == Mechanism::CramMd5 {
            format!("<{}.{}@{}>", rng.next_u64(), rng.next_u64(), hostname)
        } else {
            let mut raw = [0u8; NONCE_RANDOM_LEN];
            rng.fill(&mut raw);
            b64_encode(&raw)
        };
        ServerAuth::with_nonce(mech, &nonce, hostname, channel_binding)
    }

    /// Like [`ServerAuth::new`] with a fixed SCRAM server nonce (or, for CRAM-MD5, the whole
    /// challenge). For reproducing published examples and for fuzzing; a fixed nonce in
    /// production allows replay.
    #[doc(hidden)]
    pub fn with_nonce(
        mech: Mechanism,
        nonce: &str,
        hostname: &str,
        channel_binding: Option<Vec<u8>>,
    ) -> ServerAuth {
        let mut fake_salt_key = b"rmox fake SCRAM salt ".to_vec();
        fake_salt_key.extend_from_slice(hostname.as_bytes());
        ServerAuth {
            mech,
            plus_advertised: channel_binding.is_some(),
            channel_binding,
            nonce: nonce.to_string(),
            fake_salt_key,
            fake_iterations: SCRAM_DEFAULT_ITERATIONS,
            state: State::Start,
        }
    }

    /// Whether the session advertises the -PLUS mechanisms on this connection (default:
    /// whether channel binding data was given). A SCRAM client that says "I support channel
    /// binding but you do not" (`y`) while this is true is refused as a downgrade.
    pub fn set_plus_advertised(&mut self, advertised: bool) {
        self.plus_advertised = advertised;
    }

    /// How fake SCRAM parameters for unknown users are made: the salt is
    /// `HMAC-SHA256(salt_key, username)` (16 bytes), so that it is the same on every attempt
    /// for one name; `iterations` should be what real users have. Pass a server-wide
    /// secret: with the default key (derived from the host name) an attacker who knows this
    /// code can tell unknown users from known ones by their salt.
    pub fn set_unknown_user_params(&mut self, salt_key: &[u8], iterations: u32) {
        self.fake_salt_key = salt_key.to_vec();
        self.fake_iterations = iterations.max(1);
    }

    /// The mechanism of this exchange.
    pub fn mechanism(&self) -> Mechanism {
        self.mech
    }

    /// Starts the exchange with the optional initial response (already base64-decoded;
    /// `Some(empty)` for `=`).
    pub fn start(&mut self, initial: Option<&[u8]>) -> ServerStep {
        if !matches!(self.state, State::Start) {
            return self.fail(AuthFailure::OutOfOrder);
        }
        if self.mech.needs_channel_binding() && self.channel_binding.is_none() {
            return self.fail(AuthFailure::ChannelBindingUnsupported);
        }
        match (self.mech, initial) {
            (Mechanism::Plain, None) => self.challenge(State::PlainAwait, Vec::new()),
            (Mechanism::Plain, Some(msg)) => self.plain(msg),
            (Mechanism::Login, None) => self.challenge(State::LoginUser, b"Username:".to_vec()),
            (Mechanism::Login, Some(user)) => self.login_user(user),
            (Mechanism::CramMd5, None) => {
                let challenge = self.nonce.clone().into_bytes();
                self.challenge(State::CramAwait, challenge)
            }
            (Mechanism::CramMd5, Some(_)) => {
                self.fail(AuthFailure::Malformed("CRAM-MD5 takes no initial response"))
            }
            (_, None) => self.challenge(State::ScramFirstAwait, Vec::new()),
            (_, Some(msg)) => self.scram_first(msg),
        }
    }

    /// The client's response to the last `Challenge` (decoded).
    pub fn respond(&mut self, response: &[u8]) -> ServerStep {
        match std::mem::replace(&mut self.state, State::Done) {
            State::PlainAwait => self.plain(response),
            State::LoginUser => self.login_user(response),
            State::LoginPass { username } => match std::str::from_utf8(response) {
                Ok(password) if !password.is_empty() => {
                    self.check_password(username, password.to_string())
                }
                Ok(_) => self.fail(AuthFailure::Malformed("empty LOGIN password")),
                Err(_) => self.fail(AuthFailure::Malformed("LOGIN password is not UTF-8")),
            },
            State::CramAwait => self.cram_response(response),
            State::ScramFirstAwait => self.scram_first(response),
            State::ScramFinalAwait(pending) => {
                let step = match scram_final(&pending, self.channel_binding.as_deref(), response) {
                    Ok(step) => step,
                    Err(e) => ServerStep::Failure(e),
                };
                self.state = State::Done;
                step
            }
            other => {
                self.state = other;
                ServerStep::Failure(AuthFailure::OutOfOrder)
            }
        }
    }

    /// The answer to `NeedCredentials`: `None` when the user does not exist. An unknown user
    /// (or credentials of the wrong kind) continues a SCRAM exchange with fake values and
    /// fails only at the end.
    pub fn credentials(&mut self, creds: Option<StoredCredentials>) -> ServerStep {
        match std::mem::replace(&mut self.state, State::Done) {
            State::CramCreds { username, digest } => {
                let ok = match creds {
                    Some(StoredCredentials::CramMd5(c)) => {
                        ct_eq(&c.hmac(self.nonce.as_bytes()), &digest)
                    }
                    _ => false,
                };
                if ok {
                    ServerStep::Success {
                        username,
                        final_data: None,
                    }
                } else {
                    ServerStep::Failure(AuthFailure::BadCredentials)
                }
            }
            State::ScramCreds(first) => {
                let (creds, known) = match creds {
                    Some(StoredCredentials::Scram(c)) if usable(&c, first.hash) => (c, true),
                    _ => (self.fake_credentials(&first), false),
                };
                let server_first = format!(
                    "r={}{},s={},i={}",
                    first.client_nonce,
                    self.nonce,
                    b64_encode(&creds.salt),
                    creds.iterations
                );
                let challenge = server_first.clone().into_bytes();
                self.state = State::ScramFinalAwait(Box::new(ScramPending {
                    first,
                    server_first,
                    creds,
                    known,
                }));
                ServerStep::Challenge(challenge)
            }
            other => {
                self.state = other;
                ServerStep::Failure(AuthFailure::OutOfOrder)
            }
        }
    }

    /// The answer to `CheckPassword`.
    pub fn password_checked(&mut self, ok: bool) -> ServerStep {
        match std::mem::replace(&mut self.state, State::Done) {
            State::CheckingPassword { username } if ok => ServerStep::Success {
                username,
                final_data: None,
            },
            State::CheckingPassword { .. } => ServerStep::Failure(AuthFailure::BadCredentials),
            other => {
                self.state = other;
                ServerStep::Failure(AuthFailure::OutOfOrder)
            }
        }
    }

    fn fail(&mut self, failure: AuthFailure) -> ServerStep {
        self.state = State::Done;
        ServerStep::Failure(failure)
    }

    fn challenge(&mut self, next: State, data: Vec<u8>) -> ServerStep {
        self.state = next;
        ServerStep::Challenge(data)
    }

    fn check_password(&mut self, username: String, password: String) -> ServerStep {
        self.state = State::CheckingPassword {
            username: username.clone(),
        };
        ServerStep::CheckPassword { username, password }
    }

    /// RFC 4616: `[authzid] NUL authcid NUL passwd`.
    fn plain(&mut self, msg: &[u8]) -> ServerStep {
        let parsed = std::str::from_utf8(msg)
            .map_err(|_| AuthFailure::Malformed("PLAIN message is not UTF-8"))
            .and_then(|s| {
                let mut parts = s.split('\0');
                match (parts.next(), parts.next(), parts.next(), parts.next()) {
                    (Some(authzid), Some(authcid), Some(passwd), None) => {
                        Ok((authzid, authcid, passwd))
                    }
                    _ => Err(AuthFailure::Malformed(
                        "PLAIN needs authzid NUL authcid NUL passwd",
                    )),
                }
            });
        match parsed {
            Err(e) => self.fail(e),
            Ok((_, "", _)) => self.fail(AuthFailure::Malformed("empty PLAIN authcid")),
            Ok((_, _, "")) => self.fail(AuthFailure::Malformed("empty PLAIN password")),
            Ok((authzid, authcid, _)) if !authzid.is_empty() && authzid != authcid => {
                self.fail(AuthFailure::AuthzidNotSupported)
            }
            Ok((_, authcid, passwd)) => {
                self.check_password(authcid.to_string(), passwd.to_string())
            }
        }
    }

    fn login_user(&mut self, user: &[u8]) -> ServerStep {
        match std::str::from_utf8(user) {
            Ok(u) if !u.is_empty() && !u.contains('\0') => self.challenge(
                State::LoginPass {
                    username: u.to_string(),
                },
                b"Password:".to_vec(),
            ),
            Ok(_) => self.fail(AuthFailure::Malformed("empty LOGIN username")),
            Err(_) => self.fail(AuthFailure::Malformed("LOGIN username is not UTF-8")),
        }
    }

    /// RFC 2195: `username SP 32*LHEX`.
    fn cram_response(&mut self, msg: &[u8]) -> ServerStep {
        let Some(space) = msg.iter().rposition(|&b| b == b' ') else {
            return self.fail(AuthFailure::Malformed(
                "CRAM-MD5 response needs user SP digest",
            ));
        };
        let (user, digest) = msg.split_at(space);
        let digest = digest.get(1..).and_then(parse_hex_digest);
        match (std::str::from_utf8(user), digest) {
            (Ok(u), Some(digest)) if !u.is_empty() && !u.contains('\0') => {
                self.state = State::CramCreds {
                    username: u.to_string(),
                    digest,
                };
                ServerStep::NeedCredentials {
                    username: u.to_string(),
                    kind: CredentialKind::CramMd5,
                }
            }
            _ => self.fail(AuthFailure::Malformed("bad CRAM-MD5 user or digest")),
        }
    }

    fn scram_first(&mut self, msg: &[u8]) -> ServerStep {
        match self.parse_scram_first(msg) {
            Ok(first) => {
                let username = first.username.clone();
                let kind = match first.hash {
                    ScramHash::Sha1 => CredentialKind::ScramSha1,
                    ScramHash::Sha256 => CredentialKind::ScramSha256,
                };
                self.state = State::ScramCreds(first);
                ServerStep::NeedCredentials { username, kind }
            }
            Err(e) => self.fail(e),
        }
    }

    /// RFC 5802 7: `gs2-header client-first-message-bare`.
    fn parse_scram_first(&self, msg: &[u8]) -> Result<ScramFirst, AuthFailure> {
        let hash = self.mech.scram_hash().ok_or(AuthFailure::OutOfOrder)?;
        let s = std::str::from_utf8(msg)
            .map_err(|_| AuthFailure::Malformed("SCRAM message is not UTF-8"))?;
        let mut it = s.splitn(3, ',');
        let (Some(flag), Some(authz), Some(bare)) = (it.next(), it.next(), it.next()) else {
            return Err(AuthFailure::Malformed("SCRAM gs2 header"));
        };
        let gs2_header = s
            .get(..flag.len() + authz.len() + 2)
            .ok_or(AuthFailure::Malformed("SCRAM gs2 header"))?;
        let (cb, cb_name) = match flag {
            "n" => (CbFlag::No, ""),
            "y" => (CbFlag::ClientOnly, ""),
            _ => match flag.strip_prefix("p=") {
                Some(name)
                    if !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') =>
                {
                    (CbFlag::Used, name)
                }
                _ => return Err(AuthFailure::Malformed("SCRAM gs2 channel binding flag")),
            },
        };
        let authzid = if authz.is_empty() {
            None
        } else {
            Some(
                expect_attr(Some(authz), b'a')
                    .and_then(decode_saslname)
                    .ok_or(AuthFailure::Malformed("SCRAM authzid"))?,
            )
        };
        let mut fields = bare.split(',');
        let first = fields.next();
        if first.is_some_and(|f| f.starts_with("m=")) {
            return Err(AuthFailure::UnsupportedExtension);
        }
        let username = expect_attr(first, b'n')
            .and_then(decode_saslname)
            .ok_or(AuthFailure::Malformed("SCRAM username"))?;
        let client_nonce = expect_attr(fields.next(), b'r')
            .filter(|n| valid_nonce(n))
            .ok_or(AuthFailure::Malformed("SCRAM nonce"))?;
        if !valid_extensions(fields) {
            return Err(AuthFailure::Malformed("SCRAM extension"));
        }
        match (self.mech.needs_channel_binding(), &cb) {
            (true, CbFlag::Used) if cb_name == "tls-exporter" => {}
            (true, CbFlag::Used) => return Err(AuthFailure::ChannelBindingUnsupported),
            (true, _) | (false, CbFlag::Used) => return Err(AuthFailure::ChannelBindingMismatch),
            (false, CbFlag::ClientOnly) if self.plus_advertised => {
                return Err(AuthFailure::Downgrade)
            }
            (false, _) => {}
        }
        if authzid.is_some_and(|a| a != username) {
            return Err(AuthFailure::AuthzidNotSupported);
        }
        Ok(ScramFirst {
            hash,
            gs2_header: gs2_header.to_string(),
            cb,
            username,
            bare: bare.to_string(),
            client_nonce: client_nonce.to_string(),
        })
    }

    /// Plausible credentials for a user that does not exist: the salt is stable per name.
    fn fake_credentials(&self, first: &ScramFirst) -> ScramCredentials {
        let mut salt = ScramHash::Sha256.hmac(&self.fake_salt_key, first.username.as_bytes());
        salt.truncate(16);
        let key = first.hash.hmac(&self.fake_salt_key, b"fake keys");
        let k = scram::keys(first.hash, &key);
        ScramCredentials {
            hash: first.hash,
            salt,
            iterations: self.fake_iterations,
            stored_key: k.stored_key,
            server_key: k.server_key,
        }
    }
}

/// Stored SCRAM credentials fit the mechanism's hash and are well-formed.
fn usable(c: &ScramCredentials, hash: ScramHash) -> bool {
    c.hash == hash
        && c.iterations > 0
        && c.stored_key.len() == hash.output_len()
        && c.server_key.len() == hash.output_len()
}

/// RFC 5802 7: `c=... ,r=... [,ext] ,p=...`; checks nonce, channel binding and proof.
fn scram_final(
    pending: &ScramPending,
    channel_binding: Option<&[u8]>,
    msg: &[u8],
) -> Result<ServerStep, AuthFailure> {
    let first = &pending.first;
    let hash = first.hash;
    let s = std::str::from_utf8(msg)
        .map_err(|_| AuthFailure::Malformed("SCRAM message is not UTF-8"))?;
    let idx = s
        .rfind(",p=")
        .ok_or(AuthFailure::Malformed("SCRAM proof missing"))?;
    let without_proof = s.get(..idx).ok_or(AuthFailure::Malformed("SCRAM proof"))?;
    let proof_b64 = s
        .get(idx + 3..)
        .ok_or(AuthFailure::Malformed("SCRAM proof"))?;
    let mut fields = without_proof.split(',');
    let cbind_b64 = expect_attr(fields.next(), b'c')
        .ok_or(AuthFailure::Malformed("SCRAM channel binding attribute"))?;
    let nonce = expect_attr(fields.next(), b'r').ok_or(AuthFailure::Malformed("SCRAM nonce"))?;
    if !valid_extensions(fields) {
        return Err(AuthFailure::Malformed("SCRAM extension"));
    }
    let proof = b64_decode(proof_b64).ok_or(AuthFailure::Malformed("SCRAM proof base64"))?;
    if proof.len() != hash.output_len() {
        return Err(AuthFailure::Malformed("SCRAM proof length"));
    }
    let cbind =
        b64_decode(cbind_b64).ok_or(AuthFailure::Malformed("SCRAM channel binding base64"))?;

    let expected_nonce_len = first.client_nonce.len();
    let nonce_ok = nonce.len() > expected_nonce_len
        && nonce.starts_with(&first.client_nonce)
        && pending
            .server_first
            .get(2..)
            .is_some_and(|rest| rest.split(',').next() == Some(nonce));
    if !nonce_ok {
        return Err(AuthFailure::NonceMismatch);
    }

    let mut expected_cbind = first.gs2_header.as_bytes().to_vec();
    if first.cb == CbFlag::Used {
        let data = channel_binding.ok_or(AuthFailure::ChannelBindingUnsupported)?;
        expected_cbind.extend_from_slice(data);
    }
    if !ct_eq(&cbind, &expected_cbind) {
        return Err(AuthFailure::ChannelBindingMismatch);
    }

    let auth_message = format!("{},{},{}", first.bare, pending.server_first, without_proof);
    let creds = &pending.creds;
    let client_signature =
        scram::client_signature(hash, &creds.stored_key, auth_message.as_bytes());
    let client_key = scram::xor(&proof, &client_signature);
    let proof_ok = ct_eq(&hash.hash(&client_key), &creds.stored_key);
    if !(proof_ok && pending.known) {
        return Err(AuthFailure::BadCredentials);
    }
    let server_signature =
        scram::server_signature(hash, &creds.server_key, auth_message.as_bytes());
    Ok(ServerStep::Success {
        username: first.username.clone(),
        final_data: Some(format!("v={}", b64_encode(&server_signature)).into_bytes()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::{derive_cram_md5, derive_scram};
    use crate::Rng;
    use proptest::prelude::*;

    const CB: [u8; 32] = [7; 32];

    fn scram_creds(hash: ScramHash) -> StoredCredentials {
        StoredCredentials::Scram(derive_scram(hash, "pencil", b"0123456789abcdef", 4096))
    }

    /// RFC 5802 5 and RFC 7677 3 (sasl_vectors.json): the server reproduces server-first
    /// and server-final exactly from the stored keys.
    #[test]
    fn rfc_scram_examples() {
        let cases = [
            (
                Mechanism::ScramSha1,
                ScramHash::Sha1,
                "3rfcNHYJY1ZVvWVs7j",
                "QSXCR+Q6sek8bf92",
                "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
                "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
                "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
                "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
            ),
            (
                Mechanism::ScramSha256,
                ScramHash::Sha256,
                "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
                "W22ZaJ0SNY7soEsUEjb6gQ==",
                "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
                "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
                "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
                "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
            ),
        ];
        for (mech, hash, snonce, salt, c1, s1, c2, s2) in cases {
            let creds = derive_scram(hash, "pencil", &b64_decode(salt).unwrap(), 4096);
            let mut s = ServerAuth::with_nonce(mech, snonce, "mx.example", None);
            assert_eq!(
                s.start(Some(c1.as_bytes())),
                ServerStep::NeedCredentials {
                    username: "user".into(),
                    kind: Mechanism::credential_kind(mech).unwrap()
                }
            );
            assert_eq!(
                s.credentials(Some(StoredCredentials::Scram(creds))),
                ServerStep::Challenge(s1.as_bytes().to_vec())
            );
            assert_eq!(
                s.respond(c2.as_bytes()),
                ServerStep::Success {
                    username: "user".into(),
                    final_data: Some(s2.as_bytes().to_vec())
                }
            );
            assert_eq!(s.respond(b""), ServerStep::Failure(AuthFailure::OutOfOrder));
        }
    }

    /// RFC 2195 2 (sasl_vectors.json "CRAM-MD5").
    #[test]
    fn rfc_cram_md5_example() {
        let challenge = "<1896.697170952@postoffice.reston.mci.net>";
        let mut s = ServerAuth::with_nonce(Mechanism::CramMd5, challenge, "x", None);
        assert_eq!(
            s.start(None),
            ServerStep::Challenge(challenge.as_bytes().to_vec())
        );
        assert_eq!(
            s.respond(b"tim b913a602c7eda7a495b4e6e7334d3890"),
            ServerStep::NeedCredentials {
                username: "tim".into(),
                kind: CredentialKind::CramMd5
            }
        );
        let creds = derive_cram_md5("tanstaaftanstaaf");
        assert_eq!(
            s.credentials(Some(StoredCredentials::CramMd5(creds))),
            ServerStep::Success {
                username: "tim".into(),
                final_data: None
            }
        );
    }

    #[test]
    fn cram_md5_failures() {
        let challenge = "<1896.697170952@postoffice.reston.mci.net>";
        let good = derive_cram_md5("tanstaaftanstaaf");
        let cases: Vec<(&[u8], Option<StoredCredentials>, AuthFailure)> = vec![
            // Unknown user: fails only after the credential lookup.
            (
                b"tim b913a602c7eda7a495b4e6e7334d3890",
                None,
                AuthFailure::BadCredentials,
            ),
            // Wrong password.
            (
                b"tim b913a602c7eda7a495b4e6e7334d3890",
                Some(StoredCredentials::CramMd5(derive_cram_md5("other"))),
                AuthFailure::BadCredentials,
            ),
            // Wrong digest.
            (
                b"tim b913a602c7eda7a495b4e6e7334d3891",
                Some(StoredCredentials::CramMd5(good.clone())),
                AuthFailure::BadCredentials,
            ),
            // Credentials of the wrong kind.
            (
                b"tim b913a602c7eda7a495b4e6e7334d3890",
                Some(scram_creds(ScramHash::Sha256)),
                AuthFailure::BadCredentials,
            ),
        ];
        for (resp, creds, want) in cases {
            let mut s = ServerAuth::with_nonce(Mechanism::CramMd5, challenge, "x", None);
            s.start(None);
            assert!(matches!(
                s.respond(resp),
                ServerStep::NeedCredentials { .. }
            ));
            assert_eq!(s.credentials(creds), ServerStep::Failure(want));
        }
        let malformed: &[&[u8]] = &[
            b"",
            b"tim",
            b" b913a602c7eda7a495b4e6e7334d3890",
            b"tim b913a602c7eda7a495b4e6e7334d389",
            b"tim b913a602c7eda7a495b4e6e7334d3890 ",
            b"tim zz13a602c7eda7a495b4e6e7334d3890",
            b"\xfftim b913a602c7eda7a495b4e6e7334d3890",
        ];
        for resp in malformed {
            let mut s = ServerAuth::with_nonce(Mechanism::CramMd5, challenge, "x", None);
            s.start(None);
            let step = s.respond(resp);
            assert!(
                matches!(&step, ServerStep::Failure(f) if f.is_malformed()),
                "{resp:?}: {step:?}"
            );
        }
        let mut s = ServerAuth::with_nonce(Mechanism::CramMd5, challenge, "x", None);
        assert!(matches!(s.start(Some(b"x")), ServerStep::Failure(f) if f.is_malformed()));
    }

    #[test]
    fn cram_challenge_format() {
        let mut rng = Rng::new(1);
        let mut s = ServerAuth::new(Mechanism::CramMd5, &mut rng, "mx.example.org", None);
        let ServerStep::Challenge(c) = s.start(None) else {
            panic!("no challenge")
        };
        let c = String::from_utf8(c).unwrap();
        assert!(c.starts_with('<') && c.ends_with("@mx.example.org>"), "{c}");
        let mut rng2 = Rng::new(2);
        let mut s2 = ServerAuth::new(Mechanism::CramMd5, &mut rng2, "mx.example.org", None);
        assert_ne!(s2.start(None), ServerStep::Challenge(c.into_bytes()));
    }

    #[test]
    fn plain_table() {
        type Case<'a> = (Option<&'a [u8]>, Result<(&'a str, &'a str), AuthFailure>);
        let cases: &[Case] = &[
            (Some(b"\0tim\0tanstaaf"), Ok(("tim", "tanstaaf"))),
            (Some(b"tim\0tim\0tanstaaf"), Ok(("tim", "tanstaaf"))),
            (
                Some("\0j\u{f6}\0p\u{e4}ss".as_bytes()),
                Ok(("j\u{f6}", "p\u{e4}ss")),
            ),
            (
                Some(b"admin\0tim\0tanstaaf"),
                Err(AuthFailure::AuthzidNotSupported),
            ),
            (Some(b""), Err(AuthFailure::Malformed(""))),
            (Some(b"tim"), Err(AuthFailure::Malformed(""))),
            (Some(b"\0tim"), Err(AuthFailure::Malformed(""))),
            (Some(b"\0\0pw"), Err(AuthFailure::Malformed(""))),
            (Some(b"\0tim\0"), Err(AuthFailure::Malformed(""))),
            (Some(b"\0tim\0pw\0"), Err(AuthFailure::Malformed(""))),
            (Some(b"\0tim\0\xff"), Err(AuthFailure::Malformed(""))),
        ];
        for (initial, want) in cases {
            let mut s = ServerAuth::with_nonce(Mechanism::Plain, "n", "x", None);
            let step = s.start(*initial);
            match want {
                Ok((u, p)) => {
                    assert_eq!(
                        step,
                        ServerStep::CheckPassword {
                            username: (*u).into(),
                            password: (*p).into()
                        }
                    );
                    let mut s2 = s.clone();
                    assert_eq!(
                        s.password_checked(true),
                        ServerStep::Success {
                            username: (*u).into(),
                            final_data: None
                        }
                    );
                    assert_eq!(
                        s2.password_checked(false),
                        ServerStep::Failure(AuthFailure::BadCredentials)
                    );
                }
                Err(AuthFailure::Malformed(_)) => assert!(
                    matches!(&step, ServerStep::Failure(f) if f.is_malformed()),
                    "{initial:?}: {step:?}"
                ),
                Err(e) => assert_eq!(step, ServerStep::Failure(e.clone())),
            }
        }
        // Without an initial response: an empty challenge first.
        let mut s = ServerAuth::with_nonce(Mechanism::Plain, "n", "x", None);
        assert_eq!(s.start(None), ServerStep::Challenge(vec![]));
        assert!(matches!(
            s.respond(b"\0u\0p"),
            ServerStep::CheckPassword { .. }
        ));
    }

    #[test]
    fn login_flows() {
        let mut s = ServerAuth::with_nonce(Mechanism::Login, "n", "x", None);
        assert_eq!(s.start(None), ServerStep::Challenge(b"Username:".to_vec()));
        assert_eq!(
            s.respond(b"tim"),
            ServerStep::Challenge(b"Password:".to_vec())
        );
        assert_eq!(
            s.respond(b"secret"),
            ServerStep::CheckPassword {
                username: "tim".into(),
                password: "secret".into()
            }
        );
        assert_eq!(
            s.password_checked(true),
            ServerStep::Success {
                username: "tim".into(),
                final_data: None
            }
        );
        // Username as initial response.
        let mut s = ServerAuth::with_nonce(Mechanism::Login, "n", "x", None);
        assert_eq!(
            s.start(Some(b"tim")),
            ServerStep::Challenge(b"Password:".to_vec())
        );
        assert!(matches!(s.respond(b"pw"), ServerStep::CheckPassword { .. }));
        assert_eq!(
            s.password_checked(false),
            ServerStep::Failure(AuthFailure::BadCredentials)
        );
        // Malformed.
        for (user, pass) in [
            (&b""[..], &b"pw"[..]),
            (b"\xff", b"pw"),
            (b"tim", b""),
            (b"tim", b"\xfe"),
        ] {
            let mut s = ServerAuth::with_nonce(Mechanism::Login, "n", "x", None);
            s.start(None);
            let mut step = s.respond(user);
            if matches!(step, ServerStep::Challenge(_)) {
                step = s.respond(pass);
            }
            assert!(
                matches!(&step, ServerStep::Failure(f) if f.is_malformed()),
                "{user:?} {pass:?}: {step:?}"
            );
        }
    }

    #[test]
    fn out_of_order_calls() {
        let mut s = ServerAuth::with_nonce(Mechanism::Plain, "n", "x", None);
        assert_eq!(
            s.respond(b"x"),
            ServerStep::Failure(AuthFailure::OutOfOrder)
        );
        assert_eq!(
            s.credentials(None),
            ServerStep::Failure(AuthFailure::OutOfOrder)
        );
        assert_eq!(
            s.password_checked(true),
            ServerStep::Failure(AuthFailure::OutOfOrder)
        );
        // Still usable: out-of-order calls before start do not consume the exchange.
        assert_eq!(s.start(None), ServerStep::Challenge(vec![]));
        assert_eq!(s.start(None), ServerStep::Failure(AuthFailure::OutOfOrder));
        assert_eq!(AuthFailure::OutOfOrder.smtp_code(), (454, "4.7.0"));
        assert_eq!(AuthFailure::BadCredentials.smtp_code(), (535, "5.7.8"));
        assert_eq!(AuthFailure::Malformed("x").smtp_code(), (501, "5.5.2"));
    }

    #[test]
    fn debug_redacts_password() {
        let step = ServerStep::CheckPassword {
            username: "tim".into(),
            password: "hunter2".into(),
        };
        let s = format!("{step:?}");
        assert!(s.contains("tim") && !s.contains("hunter2"), "{s}");
    }

    /// Runs a SCRAM exchange with hand-written client messages up to the client-final;
    /// `final_of(server_first)` builds the client-final.
    fn scram_run(
        mech: Mechanism,
        cb: Option<Vec<u8>>,
        first: &str,
        creds: Option<StoredCredentials>,
        final_of: impl Fn(&str) -> String,
    ) -> ServerStep {
        let mut s = ServerAuth::with_nonce(mech, "SNONCE", "x", cb);
        match s.start(Some(first.as_bytes())) {
            ServerStep::NeedCredentials { .. } => {}
            other => return other,
        }
        let ServerStep::Challenge(sf) = s.credentials(creds) else {
            panic!("no server-first")
        };
        let sf = String::from_utf8(sf).unwrap();
        s.respond(final_of(&sf).as_bytes())
    }

    /// A correct client-final for password "pencil".
    fn proof_final(
        hash: ScramHash,
        bare: &str,
        sf: &str,
        cbind: &[u8],
        nonce: Option<&str>,
    ) -> String {
        let mut attrs = sf.split(',');
        let r = attrs.next().unwrap().strip_prefix("r=").unwrap();
        let salt = b64_decode(attrs.next().unwrap().strip_prefix("s=").unwrap()).unwrap();
        let i: u32 = attrs
            .next()
            .unwrap()
            .strip_prefix("i=")
            .unwrap()
            .parse()
            .unwrap();
        let salted = hash.salted_password(b"pencil", &salt, i);
        let k = scram::keys(hash, &salted);
        let without = format!("c={},r={}", b64_encode(cbind), nonce.unwrap_or(r));
        let am = format!("{bare},{sf},{without}");
        let sig = scram::client_signature(hash, &k.stored_key, am.as_bytes());
        format!(
            "{without},p={}",
            b64_encode(&scram::xor(&k.client_key, &sig))
        )
    }

    #[test]
    fn scram_channel_binding_and_failures() {
        let bare = "n=user,r=CNONCE";
        let h = ScramHash::Sha256;
        let m = Mechanism::ScramSha256;
        let mp = Mechanism::ScramSha256Plus;
        let mut cbind = b"p=tls-exporter,,".to_vec();
        cbind.extend_from_slice(&CB);
        let mut other_cbind = b"p=tls-exporter,,".to_vec();
        other_cbind.extend_from_slice(&[8; 32]);
        let p_first = format!("p=tls-exporter,,{bare}");
        let n_first = format!("n,,{bare}");
        let y_first = format!("y,,{bare}");
        type Case = (
            &'static str,
            Mechanism,
            Option<Vec<u8>>,
            String,
            Option<StoredCredentials>,
            Vec<u8>,
            Result<(), AuthFailure>,
        );
        let creds = || Some(scram_creds(h));
        let cases: Vec<Case> = vec![
            (
                "plus ok",
                mp,
                Some(CB.to_vec()),
                p_first.clone(),
                creds(),
                cbind.clone(),
                Ok(()),
            ),
            (
                "plus other cb",
                mp,
                Some(CB.to_vec()),
                p_first.clone(),
                creds(),
                other_cbind,
                Err(AuthFailure::ChannelBindingMismatch),
            ),
            (
                "plus wrong gs2 in c=",
                mp,
                Some(CB.to_vec()),
                p_first.clone(),
                creds(),
                b"n,,".to_vec(),
                Err(AuthFailure::ChannelBindingMismatch),
            ),
            (
                "plus no tls",
                mp,
                None,
                p_first.clone(),
                creds(),
                cbind.clone(),
                Err(AuthFailure::ChannelBindingUnsupported),
            ),
            (
                "plus with n flag",
                mp,
                Some(CB.to_vec()),
                n_first.clone(),
                creds(),
                b"n,,".to_vec(),
                Err(AuthFailure::ChannelBindingMismatch),
            ),
            (
                "plus tls-unique",
                mp,
                Some(CB.to_vec()),
                format!("p=tls-unique,,{bare}"),
                creds(),
                cbind.clone(),
                Err(AuthFailure::ChannelBindingUnsupported),
            ),
            (
                "non-plus with p",
                m,
                Some(CB.to_vec()),
                p_first.clone(),
                creds(),
                cbind.clone(),
                Err(AuthFailure::ChannelBindingMismatch),
            ),
            (
                "n without tls",
                m,
                None,
                n_first.clone(),
                creds(),
                b"n,,".to_vec(),
                Ok(()),
            ),
            (
                "n with tls",
                m,
                Some(CB.to_vec()),
                n_first.clone(),
                creds(),
                b"n,,".to_vec(),
                Ok(()),
            ),
            (
                "y without plus",
                m,
                None,
                y_first.clone(),
                creds(),
                b"y,,".to_vec(),
                Ok(()),
            ),
            (
                "y downgrade",
                m,
                Some(CB.to_vec()),
                y_first.clone(),
                creds(),
                b"y,,".to_vec(),
                Err(AuthFailure::Downgrade),
            ),
            (
                "c= mismatch n",
                m,
                None,
                n_first.clone(),
                creds(),
                b"y,,".to_vec(),
                Err(AuthFailure::ChannelBindingMismatch),
            ),
            (
                "unknown user",
                m,
                None,
                n_first.clone(),
                None,
                b"n,,".to_vec(),
                Err(AuthFailure::BadCredentials),
            ),
            (
                "sha1 creds for sha256",
                m,
                None,
                n_first.clone(),
                Some(scram_creds(ScramHash::Sha1)),
                b"n,,".to_vec(),
                Err(AuthFailure::BadCredentials),
            ),
            (
                "cram creds for scram",
                m,
                None,
                n_first.clone(),
                Some(StoredCredentials::CramMd5(derive_cram_md5("pencil"))),
                b"n,,".to_vec(),
                Err(AuthFailure::BadCredentials),
            ),
            (
                "wrong password",
                m,
                None,
                n_first.clone(),
                Some(StoredCredentials::Scram(derive_scram(
                    h,
                    "pencil2",
                    b"0123456789abcdef",
                    4096,
                ))),
                b"n,,".to_vec(),
                Err(AuthFailure::BadCredentials),
            ),
            (
                "authzid same",
                m,
                None,
                format!("n,a=user,{bare}"),
                creds(),
                b"n,a=user,".to_vec(),
                Ok(()),
            ),
            (
                "authzid other",
                m,
                None,
                format!("n,a=admin,{bare}"),
                creds(),
                b"n,a=admin,".to_vec(),
                Err(AuthFailure::AuthzidNotSupported),
            ),
            (
                "mandatory ext",
                m,
                None,
                format!("n,,m=x,{bare}"),
                creds(),
                b"n,,".to_vec(),
                Err(AuthFailure::UnsupportedExtension),
            ),
            (
                "optional ext",
                m,
                None,
                format!("n,,{bare},x=ignored"),
                creds(),
                b"n,,".to_vec(),
                Ok(()),
            ),
        ];
        for (name, mech, cb, first, creds, cbind, want) in cases {
            let bare_of = first.splitn(3, ',').nth(2).unwrap().to_string();
            let step = scram_run(mech, cb, &first, creds, |sf| {
                proof_final(h, &bare_of, sf, &cbind, None)
            });
            match want {
                Ok(()) => assert!(
                    matches!(&step, ServerStep::Success { username, final_data: Some(_) } if username == "user"),
                    "{name}: {step:?}"
                ),
                Err(e) => assert_eq!(step, ServerStep::Failure(e), "{name}"),
            }
        }
        // With -PLUS advertised explicitly off, `y` is accepted even under TLS.
        let mut s = ServerAuth::with_nonce(m, "SNONCE", "x", Some(CB.to_vec()));
        s.set_plus_advertised(false);
        assert!(matches!(
            s.start(Some(y_first.as_bytes())),
            ServerStep::NeedCredentials { .. }
        ));
    }

    /// The fake keys of an unknown user are derivable by anyone who knows the salt key
    /// (by default derived from the host name): a proof made with them must still fail.
    #[test]
    fn scram_forged_proof_for_unknown_user_refused() {
        let h = ScramHash::Sha256;
        let step = scram_run(
            Mechanism::ScramSha256,
            None,
            "n,,n=ghost,r=CNONCE",
            None,
            |sf| {
                let salted = h.hmac(b"rmox fake SCRAM salt x", b"fake keys");
                let k = scram::keys(h, &salted);
                let without = format!(
                    "c=biws,r={}",
                    sf.split(',').next().unwrap().strip_prefix("r=").unwrap()
                );
                let am = format!("n=ghost,r=CNONCE,{sf},{without}");
                let sig = scram::client_signature(h, &k.stored_key, am.as_bytes());
                format!(
                    "{without},p={}",
                    b64_encode(&scram::xor(&k.client_key, &sig))
                )
            },
        );
        assert_eq!(step, ServerStep::Failure(AuthFailure::BadCredentials));
    }

    #[test]
    fn scram_unknown_user_looks_real() {
        let first = "n,,n=ghost,r=CNONCE";
        let sf = |key: Option<&[u8]>| {
            let mut s = ServerAuth::with_nonce(Mechanism::ScramSha256, "SNONCE", "x", None);
            if let Some(k) = key {
                s.set_unknown_user_params(k, 10000);
            }
            s.start(Some(first.as_bytes()));
            match s.credentials(None) {
                ServerStep::Challenge(c) => String::from_utf8(c).unwrap(),
                other => panic!("{other:?}"),
            }
        };
        let a = sf(None);
        assert!(
            a.starts_with("r=CNONCESNONCE,s=") && a.ends_with(",i=4096"),
            "{a}"
        );
        assert_eq!(a, sf(None), "stable salt per user");
        let b = sf(Some(b"secret"));
        assert!(b.ends_with(",i=10000"), "{b}");
        assert_ne!(a.split(',').nth(1), b.split(',').nth(1));
        let salt = b64_decode(a.split(',').nth(1).unwrap().strip_prefix("s=").unwrap()).unwrap();
        assert_eq!(salt.len(), 16);
    }

    #[test]
    fn scram_malformed_table() {
        let ok_bare = "n=user,r=CNONCE";
        // Client-first messages.
        let firsts: &[&[u8]] = &[
            b"",
            b"n",
            b"n,",
            b"x,,n=user,r=CNONCE",
            b"p=,,n=user,r=CNONCE",
            b"p=tls_exporter,,n=user,r=CNONCE",
            b"n,b=user,n=user,r=CNONCE",
            b"n,a=,n=user,r=CNONCE",
            b"n,,",
            b"n,,n=user",
            b"n,,n=user,",
            b"n,,n=,r=CNONCE",
            b"n,,n=us=er,r=CNONCE",
            b"n,,user,r=CNONCE",
            b"n,,n=user,r=",
            b"n,,n=user,s=CNONCE",
            b"n,,r=CNONCE,n=user",
            b"n,,n=user,r=CN NCE",
            b"n,,n=user,r=CNONCE,",
            b"n,,n=user,r=CNONCE,xx=1",
            b"n,,n=\xff,r=CNONCE",
        ];
        for first in firsts {
            let mut s = ServerAuth::with_nonce(Mechanism::ScramSha1, "SNONCE", "x", None);
            let step = s.start(Some(first));
            assert!(
                matches!(&step, ServerStep::Failure(f) if f.is_malformed()),
                "{:?}: {step:?}",
                String::from_utf8_lossy(first)
            );
        }
        // Client-final messages after a valid first.
        let h = ScramHash::Sha1;
        type FinalOf = Box<dyn Fn(&str) -> String>;
        let finals: Vec<(&str, FinalOf, Option<AuthFailure>)> = vec![
            (
                "missing p",
                Box::new(|_: &str| "c=biws,r=CNONCESNONCE".into()),
                None,
            ),
            ("empty", Box::new(|_: &str| String::new()), None),
            (
                "truncated",
                Box::new(move |sf: &str| {
                    let f = proof_final(h, ok_bare, sf, b"n,,", None);
                    f[..f.len() - 5].to_string()
                }),
                None,
            ),
            (
                "bad base64 proof",
                Box::new(|_: &str| "c=biws,r=CNONCESNONCE,p=!!!!".into()),
                None,
            ),
            (
                "short proof",
                Box::new(|_: &str| "c=biws,r=CNONCESNONCE,p=AAAA".into()),
                None,
            ),
            (
                "bad base64 c",
                Box::new(move |sf: &str| {
                    proof_final(h, ok_bare, sf, b"n,,", None).replacen("c=biws", "c=b!ws", 1)
                }),
                None,
            ),
            (
                "missing r",
                Box::new(|_: &str| "c=biws,p=AAAAAAAAAAAAAAAAAAAAAAAAAAA=".into()),
                None,
            ),
            (
                "r before c",
                Box::new(|_: &str| "r=CNONCESNONCE,c=biws,p=AAAAAAAAAAAAAAAAAAAAAAAAAAA=".into()),
                None,
            ),
            (
                "no proof after nonce",
                Box::new(|_: &str| "c=biws,r=\u{fffd}".into()),
                Some(AuthFailure::Malformed("")),
            ),
            (
                "wrong nonce",
                Box::new(move |sf: &str| {
                    proof_final(h, ok_bare, sf, b"n,,", Some("CNONCESNONCEX"))
                }),
                Some(AuthFailure::NonceMismatch),
            ),
            (
                "client nonce only",
                Box::new(move |sf: &str| proof_final(h, ok_bare, sf, b"n,,", Some("CNONCE"))),
                Some(AuthFailure::NonceMismatch),
            ),
            (
                "other server nonce",
                Box::new(move |sf: &str| proof_final(h, ok_bare, sf, b"n,,", Some("CNONCESNONCF"))),
                Some(AuthFailure::NonceMismatch),
            ),
        ];
        for (name, final_of, want) in finals {
            let step = scram_run(
                Mechanism::ScramSha1,
                None,
                &format!("n,,{ok_bare}"),
                Some(scram_creds(h)),
                final_of,
            );
            match want {
                None | Some(AuthFailure::Malformed(_)) => assert!(
                    matches!(&step, ServerStep::Failure(f) if f.is_malformed()),
                    "{name}: {step:?}"
                ),
                Some(e) => assert_eq!(step, ServerStep::Failure(e), "{name}"),
            }
        }
    }

    #[test]
    fn scram_without_initial_response() {
        let mut s = ServerAuth::with_nonce(Mechanism::ScramSha1, "SNONCE", "x", None);
        assert_eq!(s.start(None), ServerStep::Challenge(vec![]));
        assert!(matches!(
            s.respond(b"n,,n=user,r=CNONCE"),
            ServerStep::NeedCredentials { .. }
        ));
        // Some(empty) (`=`) is an empty client-first: malformed.
        let mut s = ServerAuth::with_nonce(Mechanism::ScramSha1, "SNONCE", "x", None);
        assert!(matches!(s.start(Some(b"")), ServerStep::Failure(f) if f.is_malformed()));
    }

    #[test]
    fn random_server_nonces_differ_and_are_printable() {
        let mut rng = Rng::new(42);
        let mut nonces = Vec::new();
        for _ in 0..3 {
            let mut s = ServerAuth::new(Mechanism::ScramSha256, &mut rng, "x", None);
            s.start(Some(b"n,,n=user,r=C"));
            let ServerStep::Challenge(c) = s.credentials(Some(scram_creds(ScramHash::Sha256)))
            else {
                panic!()
            };
            let c = String::from_utf8(c).unwrap();
            let r = c
                .split(',')
                .next()
                .unwrap()
                .strip_prefix("r=C")
                .unwrap()
                .to_string();
            assert!(valid_nonce(&r) && r.len() == 24, "{r}");
            nonces.push(r);
        }
        assert_ne!(nonces[0], nonces[1]);
        assert_ne!(nonces[1], nonces[2]);
    }

    fn creds_strategy() -> impl Strategy<Value = Option<StoredCredentials>> {
        prop_oneof![
            Just(None),
            Just(Some(StoredCredentials::Scram(derive_scram(
                ScramHash::Sha1,
                "p",
                b"s",
                1
            )))),
            Just(Some(StoredCredentials::Scram(derive_scram(
                ScramHash::Sha256,
                "p",
                b"s",
                1
            )))),
            Just(Some(StoredCredentials::CramMd5(derive_cram_md5("p")))),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Arbitrary bytes into every step of every mechanism never panic, and the exchange
        /// ends in at most a few steps.
        #[test]
        fn arbitrary_input_never_panics(
            mech_idx in 0usize..7,
            initial in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..80)),
            responses in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 0..4),
            creds in creds_strategy(),
            cb in any::<bool>(),
            ok in any::<bool>(),
        ) {
            let mech = Mechanism::ALL[mech_idx];
            let mut s = ServerAuth::with_nonce(mech, "SNONCE", "x", cb.then(|| CB.to_vec()));
            let mut step = s.start(initial.as_deref());
            let mut responses = responses.into_iter();
            for _ in 0..8 {
                step = match step {
                    ServerStep::Challenge(_) => match responses.next() {
                        Some(r) => s.respond(&r),
                        None => break,
                    },
                    ServerStep::CheckPassword { .. } => s.password_checked(ok),
                    ServerStep::NeedCredentials { .. } => s.credentials(creds.clone()),
                    ServerStep::Success { .. } | ServerStep::Failure(_) => break,
                };
            }
        }

        /// Structured-ish SCRAM client-finals (random attribute soup) never panic.
        #[test]
        fn scram_final_soup_never_panics(soup in "(c=[A-Za-z0-9+/=!]{0,12}|r=[!-~]{0,20}|p=[A-Za-z0-9+/=]{0,50}|,){0,8}") {
            let _ = scram_run(
                Mechanism::ScramSha1,
                None,
                "n,,n=user,r=CNONCE",
                Some(scram_creds(ScramHash::Sha1)),
                |_| soup.clone(),
            );
        }
    }
}
