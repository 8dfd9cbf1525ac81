//! The client side of every mechanism, for the SMTP client machine (submission to a
//! smarthost, tests).
//!
//! ```text
//! let mut c = ClientAuth::new(mech, user, password, &mut rng, exporter)?;  // or try_new
//! send "AUTH mech" + base64(c.initial_response()) if Some, "=" for an empty one
//! on "334 data": send base64(c.respond(&decoded)?)
//! on "235":      c.finish()?   (SCRAM: the server proved it knows the user's keys)
//! ```

use super::cram::{derive_cram_md5, hex};
use super::scram::{
    self, b64_decode, b64_encode, ct_eq, encode_saslname, expect_attr, valid_extensions,
    valid_nonce, ScramHash,
};
use super::Mechanism;
use crate::Rng;

/// The highest SCRAM iteration count the client accepts from a server; more would let a
/// hostile server make the client burn CPU.
pub const SCRAM_MAX_ITERATIONS: u32 = 1_000_000;

/// Why the client cannot continue. Once returned, every later call returns it again.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientAuthError {
    /// A -PLUS mechanism was chosen without channel binding data (no TLS).
    #[error("channel binding required by the mechanism but unavailable")]
    ChannelBindingUnavailable,
    /// The user name or password cannot be sent with this mechanism (empty, or a NUL in
    /// PLAIN); the text says which.
    #[error("credentials cannot be sent with this mechanism: {0}")]
    UnsendableCredentials(&'static str),
    /// The server's challenge does not follow the mechanism's syntax; the text says which
    /// part.
    #[error("malformed server challenge: {0}")]
    MalformedChallenge(&'static str),
    /// A challenge arrived where the mechanism expects none (or no more).
    #[error("unexpected server challenge")]
    UnexpectedChallenge,
    /// The SCRAM server nonce does not extend the client's nonce.
    #[error("SCRAM server nonce does not extend the client nonce")]
    NonceMismatch,
    /// The SCRAM iteration count is 0 or above [`SCRAM_MAX_ITERATIONS`].
    #[error("SCRAM iteration count {0} out of range")]
    IterationCount(u32),
    /// The server demands a SCRAM extension (`m=`) this client does not support.
    #[error("unsupported mandatory SCRAM extension")]
    UnsupportedExtension,
    /// The server ended the SCRAM exchange with `e=` and this value.
    #[error("SCRAM server error: {0}")]
    ServerError(String),
    /// The SCRAM server signature is wrong: the server does not know the user's keys.
    #[error("SCRAM server signature does not verify")]
    ServerSignatureMismatch,
    /// `finish` was called for SCRAM but the server never sent its signature (`v=`).
    #[error("SCRAM server signature never received")]
    ServerSignatureMissing,
    /// `finish` was called before the client sent its last message.
    #[error("authentication exchange incomplete")]
    Incomplete,
}

#[derive(Clone, Debug)]
enum State {
    Start,
    PlainSent,
    LoginUserSent,
    LoginPassSent,
    CramSent,
    ScramFirstSent { gs2_header: String, bare: String },
    ScramFinalSent { server_signature: Vec<u8> },
    ScramVerified,
    Failed(ClientAuthError),
}

/// The client side of one AUTH exchange.
#[derive(Clone)]
pub struct ClientAuth {
    mech: Mechanism,
    username: String,
    password: String,
    channel_binding: Option<Vec<u8>>,
    nonce: String,
    state: State,
}

impl std::fmt::Debug for ClientAuth {
    /// Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("mech", &self.mech)
            .field("username", &self.username)
            .field("has_channel_binding", &self.channel_binding.is_some())
            .finish_non_exhaustive()
    }
}

/// Length of the random part of a client nonce, before base64.
const NONCE_RANDOM_LEN: usize = 18;

impl ClientAuth {
    /// A new exchange. `channel_binding` is the `tls-exporter` value when TLS is active
    /// (needed for -PLUS; for plain SCRAM its presence makes the client send gs2 flag `y`,
    /// "I could bind but you did not offer -PLUS"). Problems with the arguments (see
    /// [`ClientAuth::try_new`]) are reported by the first `respond` or `finish`, and
    /// `initial_response` is then `None`.
    pub fn new(
        mech: Mechanism,
        username: &str,
        password: &str,
        rng: &mut Rng,
        channel_binding: Option<Vec<u8>>,
    ) -> ClientAuth {
        let mut raw = [0u8; NONCE_RANDOM_LEN];
        rng.fill(&mut raw);
        ClientAuth::with_nonce(mech, username, password, &b64_encode(&raw), channel_binding)
    }

    /// Like [`ClientAuth::new`], but returns the argument problems at once: a -PLUS
    /// mechanism without channel binding, an empty user name, an empty PLAIN/LOGIN
    /// password, a NUL in PLAIN credentials.
    pub fn try_new(
        mech: Mechanism,
        username: &str,
        password: &str,
        rng: &mut Rng,
        channel_binding: Option<Vec<u8>>,
    ) -> Result<ClientAuth, ClientAuthError> {
        let c = ClientAuth::new(mech, username, password, rng, channel_binding);
        match &c.state {
            State::Failed(e) => Err(e.clone()),
            _ => Ok(c),
        }
    }

    /// Like [`ClientAuth::new`] with a fixed SCRAM client nonce, for reproducing published
    /// examples and for fuzzing.
    #[doc(hidden)]
    pub fn with_nonce(
        mech: Mechanism,
        username: &str,
        password: &str,
        nonce: &str,
        channel_binding: Option<Vec<u8>>,
    ) -> ClientAuth {
        let problem = if mech.needs_channel_binding() && channel_binding.is_none() {
            Some(ClientAuthError::ChannelBindingUnavailable)
        } else if username.is_empty() {
            Some(ClientAuthError::UnsendableCredentials("empty user name"))
        } else if mech.is_plaintext() && password.is_empty() {
            Some(ClientAuthError::UnsendableCredentials("empty password"))
        } else if username.contains('\0') || (mech == Mechanism::Plain && password.contains('\0')) {
            Some(ClientAuthError::UnsendableCredentials(
                "NUL in user name or password",
            ))
        } else if mech.scram_hash().is_some() && !valid_nonce(nonce) {
            Some(ClientAuthError::UnsendableCredentials("invalid nonce"))
        } else {
            None
        };
        ClientAuth {
            mech,
            username: username.to_string(),
            password: password.to_string(),
            channel_binding,
            nonce: nonce.to_string(),
            state: problem.map_or(State::Start, State::Failed),
        }
    }

    /// The mechanism of this exchange.
    pub fn mechanism(&self) -> Mechanism {
        self.mech
    }

    /// The initial response to send with AUTH (`None` for LOGIN and CRAM-MD5, which wait
    /// for a challenge, and after an argument error). Calling it again returns `None`.
    pub fn initial_response(&mut self) -> Option<Vec<u8>> {
        if !matches!(self.state, State::Start) {
            return None;
        }
        match self.mech {
            Mechanism::Login | Mechanism::CramMd5 => None,
            Mechanism::Plain => Some(self.plain()),
            _ => Some(self.scram_first()),
        }
    }

    /// The response to a server challenge (decoded).
    pub fn respond(&mut self, challenge: &[u8]) -> Result<Vec<u8>, ClientAuthError> {
        let result =
            match std::mem::replace(&mut self.state, State::Failed(ClientAuthError::Incomplete)) {
                State::Failed(e) => Err(e),
                State::Start => match self.mech {
                    Mechanism::Plain => Ok(self.plain()),
                    Mechanism::Login => Ok(self.login(challenge, true)),
                    Mechanism::CramMd5 => Ok(self.cram(challenge)),
                    _ if challenge.is_empty() => Ok(self.scram_first()),
                    _ => Err(ClientAuthError::UnexpectedChallenge),
                },
                State::LoginUserSent => Ok(self.login(challenge, false)),
                State::ScramFirstSent { gs2_header, bare } => {
                    self.scram_final(&gs2_header, &bare, challenge)
                }
                State::ScramFinalSent { server_signature } => {
                    verify_server_final(&server_signature, challenge).map(|()| {
                        self.state = State::ScramVerified;
                        Vec::new()
                    })
                }
                State::PlainSent
                | State::LoginPassSent
                | State::CramSent
                | State::ScramVerified => Err(ClientAuthError::UnexpectedChallenge),
            };
        if let Err(e) = &result {
            self.state = State::Failed(e.clone());
        }
        result
    }

    /// After 235: whether the exchange completed; for SCRAM, whether the server signature
    /// was received and verified.
    pub fn finish(&self) -> Result<(), ClientAuthError> {
        match &self.state {
            State::Failed(e) => Err(e.clone()),
            State::PlainSent | State::LoginPassSent | State::CramSent | State::ScramVerified => {
                Ok(())
            }
            State::ScramFinalSent { .. } => Err(ClientAuthError::ServerSignatureMissing),
            State::Start | State::LoginUserSent | State::ScramFirstSent { .. } => {
                Err(ClientAuthError::Incomplete)
            }
        }
    }

    /// RFC 4616 with an empty authzid.
    fn plain(&mut self) -> Vec<u8> {
        self.state = State::PlainSent;
        format!("\0{}\0{}", self.username, self.password).into_bytes()
    }

    /// The first challenge gets the user name and the second the password, unless the
    /// challenge text says otherwise ("Password:" first).
    fn login(&mut self, challenge: &[u8], first: bool) -> Vec<u8> {
        let lower = challenge.to_ascii_lowercase();
        let wants_password = if lower.starts_with(b"pass") {
            true
        } else if lower.starts_with(b"user") {
            false
        } else {
            !first
        };
        if wants_password {
            self.state = State::LoginPassSent;
            self.password.clone().into_bytes()
        } else {
            self.state = State::LoginUserSent;
            self.username.clone().into_bytes()
        }
    }

    /// RFC 2195: `user SP hex(HMAC-MD5(password, challenge))`.
    fn cram(&mut self, challenge: &[u8]) -> Vec<u8> {
        self.state = State::CramSent;
        let mac = derive_cram_md5(&self.password).hmac(challenge);
        format!("{} {}", self.username, hex(&mac)).into_bytes()
    }

    fn scram_first(&mut self) -> Vec<u8> {
        let gs2_header = if self.mech.needs_channel_binding() {
            "p=tls-exporter,,"
        } else if self.channel_binding.is_some() {
            "y,,"
        } else {
            "n,,"
        };
        let bare = format!("n={},r={}", encode_saslname(&self.username), self.nonce);
        let msg = format!("{gs2_header}{bare}").into_bytes();
        self.state = State::ScramFirstSent {
            gs2_header: gs2_header.to_string(),
            bare,
        };
        msg
    }

    /// Parses server-first and computes client-final.
    fn scram_final(
        &mut self,
        gs2_header: &str,
        bare: &str,
        challenge: &[u8],
    ) -> Result<Vec<u8>, ClientAuthError> {
        let hash: ScramHash = self
            .mech
            .scram_hash()
            .ok_or(ClientAuthError::UnexpectedChallenge)?;
        let server_first = std::str::from_utf8(challenge)
            .map_err(|_| ClientAuthError::MalformedChallenge("SCRAM message is not UTF-8"))?;
        let mut fields = server_first.split(',');
        let first = fields.next();
        if let Some(f) = first {
            if f.starts_with("m=") {
                return Err(ClientAuthError::UnsupportedExtension);
            }
            if let Some(e) = f.strip_prefix("e=") {
                return Err(ClientAuthError::ServerError(e.to_string()));
            }
        }
        let nonce = expect_attr(first, b'r')
            .filter(|n| valid_nonce(n))
            .ok_or(ClientAuthError::MalformedChallenge("SCRAM nonce"))?;
        if !(nonce.len() > self.nonce.len() && nonce.starts_with(&self.nonce)) {
            return Err(ClientAuthError::NonceMismatch);
        }
        let salt = expect_attr(fields.next(), b's')
            .and_then(b64_decode)
            .ok_or(ClientAuthError::MalformedChallenge("SCRAM salt"))?;
        let iterations_text = expect_attr(fields.next(), b'i')
            .filter(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
            .ok_or(ClientAuthError::MalformedChallenge("SCRAM iteration count"))?;
        if !valid_extensions(fields) {
            return Err(ClientAuthError::MalformedChallenge("SCRAM extension"));
        }
        let iterations = iterations_text.parse::<u32>().unwrap_or(u32::MAX);
        if iterations == 0 || iterations > SCRAM_MAX_ITERATIONS {
            return Err(ClientAuthError::IterationCount(iterations));
        }
        let mut cbind = gs2_header.as_bytes().to_vec();
        if self.mech.needs_channel_binding() {
            let data = self
                .channel_binding
                .as_deref()
                .ok_or(ClientAuthError::ChannelBindingUnavailable)?;
            cbind.extend_from_slice(data);
        }
        let without_proof = format!("c={},r={}", b64_encode(&cbind), nonce);
        let auth_message = format!("{bare},{server_first},{without_proof}");
        let salted = hash.salted_password(self.password.as_bytes(), &salt, iterations);
        let keys = scram::keys(hash, &salted);
        let client_signature =
            scram::client_signature(hash, &keys.stored_key, auth_message.as_bytes());
        let proof = scram::xor(&keys.client_key, &client_signature);
        let server_signature =
            scram::server_signature(hash, &keys.server_key, auth_message.as_bytes());
        self.state = State::ScramFinalSent { server_signature };
        Ok(format!("{without_proof},p={}", b64_encode(&proof)).into_bytes())
    }
}

/// RFC 5802: `server-final-message = (server-error / verifier) ["," extensions]`.
fn verify_server_final(expected: &[u8], challenge: &[u8]) -> Result<(), ClientAuthError> {
    let s = std::str::from_utf8(challenge)
        .map_err(|_| ClientAuthError::MalformedChallenge("SCRAM message is not UTF-8"))?;
    let mut fields = s.split(',');
    let first = fields.next();
    if let Some(e) = first.and_then(|f| f.strip_prefix("e=")) {
        return Err(ClientAuthError::ServerError(e.to_string()));
    }
    let signature = expect_attr(first, b'v').and_then(b64_decode).ok_or(
        ClientAuthError::MalformedChallenge("SCRAM server signature"),
    )?;
    if !valid_extensions(fields) {
        return Err(ClientAuthError::MalformedChallenge("SCRAM extension"));
    }
    if ct_eq(&signature, expected) {
        Ok(())
    } else {
        Err(ClientAuthError::ServerSignatureMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::{
        derive_scram, AuthFailure, CredentialKind, ServerAuth, ServerStep, StoredCredentials,
    };
    use crate::Rng;
    use proptest::prelude::*;

    /// RFC 5802 5 and RFC 7677 3 (sasl_vectors.json): the client reproduces client-first and
    /// client-final exactly and verifies server-final.
    #[test]
    fn rfc_scram_examples() {
        let cases = [
            (
                Mechanism::ScramSha1,
                "fyko+d2lbbFgONRv9qkxdawL",
                "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
                "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
                "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
                "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
            ),
            (
                Mechanism::ScramSha256,
                "rOprNGfwEbeRWgbNEkqO",
                "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
                "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
                "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
                "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
            ),
        ];
        for (mech, cnonce, c1, s1, c2, s2) in cases {
            let mut c = ClientAuth::with_nonce(mech, "user", "pencil", cnonce, None);
            assert_eq!(c.initial_response(), Some(c1.as_bytes().to_vec()));
            assert_eq!(c.initial_response(), None);
            assert_eq!(c.finish(), Err(ClientAuthError::Incomplete));
            assert_eq!(c.respond(s1.as_bytes()), Ok(c2.as_bytes().to_vec()));
            assert_eq!(c.finish(), Err(ClientAuthError::ServerSignatureMissing));
            let mut wrong = c.clone();
            assert_eq!(c.respond(s2.as_bytes()), Ok(vec![]));
            assert_eq!(c.finish(), Ok(()));
            assert_eq!(c.respond(b""), Err(ClientAuthError::UnexpectedChallenge));
            // A server that does not know the keys.
            let mut sig = b64_decode(s2.strip_prefix("v=").unwrap()).unwrap();
            sig[0] ^= 1;
            let bad = format!("v={}", b64_encode(&sig));
            assert_eq!(
                wrong.respond(bad.as_bytes()),
                Err(ClientAuthError::ServerSignatureMismatch)
            );
            assert_eq!(
                wrong.finish(),
                Err(ClientAuthError::ServerSignatureMismatch)
            );
        }
    }

    /// RFC 2195 2 (sasl_vectors.json "CRAM-MD5").
    #[test]
    fn rfc_cram_md5_example() {
        let mut rng = Rng::new(1);
        let mut c = ClientAuth::new(
            Mechanism::CramMd5,
            "tim",
            "tanstaaftanstaaf",
            &mut rng,
            None,
        );
        assert_eq!(c.initial_response(), None);
        assert_eq!(
            c.respond(b"<1896.697170952@postoffice.reston.mci.net>"),
            Ok(b"tim b913a602c7eda7a495b4e6e7334d3890".to_vec())
        );
        assert_eq!(c.finish(), Ok(()));
        assert_eq!(c.respond(b"x"), Err(ClientAuthError::UnexpectedChallenge));
    }

    #[test]
    fn plain_and_login_messages() {
        let mut rng = Rng::new(1);
        let mut c = ClientAuth::new(Mechanism::Plain, "tim", "pw", &mut rng, None);
        assert_eq!(c.initial_response(), Some(b"\0tim\0pw".to_vec()));
        assert_eq!(c.finish(), Ok(()));
        // Without an initial response: answers the empty challenge.
        let mut c = ClientAuth::new(Mechanism::Plain, "tim", "pw", &mut rng, None);
        assert_eq!(c.respond(b""), Ok(b"\0tim\0pw".to_vec()));
        assert_eq!(c.respond(b""), Err(ClientAuthError::UnexpectedChallenge));

        let mut c = ClientAuth::new(Mechanism::Login, "tim", "pw", &mut rng, None);
        assert_eq!(c.initial_response(), None);
        assert_eq!(c.finish(), Err(ClientAuthError::Incomplete));
        assert_eq!(c.respond(b"Username:"), Ok(b"tim".to_vec()));
        assert_eq!(c.finish(), Err(ClientAuthError::Incomplete));
        assert_eq!(c.respond(b"Password:"), Ok(b"pw".to_vec()));
        assert_eq!(c.finish(), Ok(()));
        // Unlabelled challenges go by order; a "Password" label is honoured.
        let mut c = ClientAuth::new(Mechanism::Login, "tim", "pw", &mut rng, None);
        assert_eq!(c.respond(b"?"), Ok(b"tim".to_vec()));
        assert_eq!(c.respond(b"?"), Ok(b"pw".to_vec()));
        let mut c = ClientAuth::new(Mechanism::Login, "tim", "pw", &mut rng, None);
        assert_eq!(c.respond(b"password:"), Ok(b"pw".to_vec()));
    }

    #[test]
    fn argument_problems() {
        let cases: &[(Mechanism, &str, &str, bool, ClientAuthError)] = &[
            (
                Mechanism::ScramSha256Plus,
                "u",
                "p",
                false,
                ClientAuthError::ChannelBindingUnavailable,
            ),
            (
                Mechanism::ScramSha1Plus,
                "u",
                "p",
                false,
                ClientAuthError::ChannelBindingUnavailable,
            ),
            (
                Mechanism::Plain,
                "",
                "p",
                false,
                ClientAuthError::UnsendableCredentials(""),
            ),
            (
                Mechanism::ScramSha1,
                "",
                "p",
                false,
                ClientAuthError::UnsendableCredentials(""),
            ),
            (
                Mechanism::Plain,
                "u",
                "",
                false,
                ClientAuthError::UnsendableCredentials(""),
            ),
            (
                Mechanism::Login,
                "u",
                "",
                false,
                ClientAuthError::UnsendableCredentials(""),
            ),
            (
                Mechanism::Plain,
                "u",
                "p\0",
                false,
                ClientAuthError::UnsendableCredentials(""),
            ),
            (
                Mechanism::CramMd5,
                "u\0",
                "p",
                false,
                ClientAuthError::UnsendableCredentials(""),
            ),
        ];
        for (mech, user, pw, cb, want) in cases {
            let mut rng = Rng::new(1);
            let cbv = cb.then(|| vec![1; 32]);
            let err = ClientAuth::try_new(*mech, user, pw, &mut rng, cbv.clone()).unwrap_err();
            let same_kind = std::mem::discriminant(&err) == std::mem::discriminant(want);
            assert!(same_kind, "{mech:?} {user:?} {pw:?}: {err:?}");
            let mut c = ClientAuth::new(*mech, user, pw, &mut rng, cbv);
            assert_eq!(c.initial_response(), None);
            assert_eq!(c.respond(b""), Err(err.clone()));
            assert_eq!(c.finish(), Err(err));
        }
        let mut rng = Rng::new(1);
        // Empty SCRAM/CRAM passwords are allowed.
        assert!(ClientAuth::try_new(Mechanism::ScramSha1, "u", "", &mut rng, None).is_ok());
        assert!(ClientAuth::try_new(Mechanism::CramMd5, "u", "", &mut rng, None).is_ok());
    }

    #[test]
    fn scram_escapes_username_and_sets_gs2_flag() {
        let mut c = ClientAuth::with_nonce(Mechanism::ScramSha1, "a,b=c", "p", "N", None);
        assert_eq!(c.initial_response(), Some(b"n,,n=a=2Cb=3Dc,r=N".to_vec()));
        let mut c = ClientAuth::with_nonce(Mechanism::ScramSha1, "u", "p", "N", Some(vec![1; 32]));
        assert_eq!(c.initial_response(), Some(b"y,,n=u,r=N".to_vec()));
        let mut c =
            ClientAuth::with_nonce(Mechanism::ScramSha1Plus, "u", "p", "N", Some(vec![1; 32]));
        assert_eq!(
            c.initial_response(),
            Some(b"p=tls-exporter,,n=u,r=N".to_vec())
        );
        // Without an initial response, the empty challenge gets client-first.
        let mut c = ClientAuth::with_nonce(Mechanism::ScramSha256, "u", "p", "N", None);
        assert_eq!(c.respond(b""), Ok(b"n,,n=u,r=N".to_vec()));
        let mut c = ClientAuth::with_nonce(Mechanism::ScramSha256, "u", "p", "N", None);
        assert_eq!(c.respond(b"x"), Err(ClientAuthError::UnexpectedChallenge));
    }

    #[test]
    fn hostile_server_first_table() {
        let cases: &[(&[u8], ClientAuthError)] = &[
            (b"", ClientAuthError::MalformedChallenge("")),
            (b"\xff", ClientAuthError::MalformedChallenge("")),
            (b"r=CNONCE", ClientAuthError::NonceMismatch),
            (
                b"r=OTHERSNONCE,s=c2FsdA==,i=1",
                ClientAuthError::NonceMismatch,
            ),
            (b"r=CNONCESNONCE", ClientAuthError::MalformedChallenge("")),
            (
                b"r=CNONCES NONCE,s=c2FsdA==,i=1",
                ClientAuthError::MalformedChallenge(""),
            ),
            (
                b"r=CNONCESNONCE,s=!!,i=1",
                ClientAuthError::MalformedChallenge(""),
            ),
            (
                b"r=CNONCESNONCE,i=1,s=c2FsdA==",
                ClientAuthError::MalformedChallenge(""),
            ),
            (
                b"r=CNONCESNONCE,s=c2FsdA==",
                ClientAuthError::MalformedChallenge(""),
            ),
            (
                b"r=CNONCESNONCE,s=c2FsdA==,i=",
                ClientAuthError::MalformedChallenge(""),
            ),
            (
                b"r=CNONCESNONCE,s=c2FsdA==,i=-1",
                ClientAuthError::MalformedChallenge(""),
            ),
            (
                b"r=CNONCESNONCE,s=c2FsdA==,i=1,",
                ClientAuthError::MalformedChallenge(""),
            ),
            (
                b"r=CNONCESNONCE,s=c2FsdA==,i=0",
                ClientAuthError::IterationCount(0),
            ),
            (
                b"r=CNONCESNONCE,s=c2FsdA==,i=1000001",
                ClientAuthError::IterationCount(1_000_001),
            ),
            (
                b"r=CNONCESNONCE,s=c2FsdA==,i=99999999999999",
                ClientAuthError::IterationCount(u32::MAX),
            ),
            (
                b"m=x,r=CNONCESNONCE,s=c2FsdA==,i=1",
                ClientAuthError::UnsupportedExtension,
            ),
            (
                b"e=unknown-user",
                ClientAuthError::ServerError("unknown-user".into()),
            ),
        ];
        for (challenge, want) in cases {
            let mut c = ClientAuth::with_nonce(Mechanism::ScramSha1, "u", "p", "CNONCE", None);
            c.initial_response();
            let got = c.respond(challenge).unwrap_err();
            match want {
                ClientAuthError::MalformedChallenge(_) => assert!(
                    matches!(got, ClientAuthError::MalformedChallenge(_)),
                    "{:?}: {got:?}",
                    String::from_utf8_lossy(challenge)
                ),
                _ => assert_eq!(&got, want, "{:?}", String::from_utf8_lossy(challenge)),
            }
            // Sticky.
            assert_eq!(c.respond(b"v=AAAA").unwrap_err(), got);
        }
        // Extensions after i= are accepted.
        let mut c = ClientAuth::with_nonce(Mechanism::ScramSha1, "u", "p", "CNONCE", None);
        c.initial_response();
        assert!(c.respond(b"r=CNONCESNONCE,s=c2FsdA==,i=1,x=y").is_ok());
        for (server_final, want) in [
            (
                &b"e=invalid-proof"[..],
                ClientAuthError::ServerError("invalid-proof".into()),
            ),
            (b"v=!!", ClientAuthError::MalformedChallenge("")),
            (b"x=AAAA", ClientAuthError::MalformedChallenge("")),
            (b"v=AAAA", ClientAuthError::ServerSignatureMismatch),
        ] {
            let mut c2 = c.clone();
            let got = c2.respond(server_final).unwrap_err();
            assert_eq!(std::mem::discriminant(&got), std::mem::discriminant(&want));
            assert!(!got.to_string().is_empty());
        }
    }

    // ---- server <-> client round trips ----

    const USER: &str = "user";
    const PASSWORD: &str = "pencil";

    fn lookup(username: &str, kind: CredentialKind) -> Option<StoredCredentials> {
        if username != USER {
            return None;
        }
        Some(match kind {
            CredentialKind::ScramSha1 => {
                StoredCredentials::Scram(derive_scram(ScramHash::Sha1, PASSWORD, b"salt-1", 4096))
            }
            CredentialKind::ScramSha256 => StoredCredentials::Scram(derive_scram(
                ScramHash::Sha256,
                PASSWORD,
                b"salt-256",
                4096,
            )),
            CredentialKind::CramMd5 => StoredCredentials::CramMd5(derive_cram_md5(PASSWORD)),
        })
    }

    /// What happened in one exchange.
    #[derive(Debug, PartialEq, Eq)]
    enum Outcome {
        /// The server said Success and the client's finish() said this.
        Success(Result<(), ClientAuthError>),
        /// The server failed.
        ServerFailure(AuthFailure),
        /// The client gave up.
        ClientError(ClientAuthError),
    }

    /// Runs a whole exchange; returns the outcome and the number of challenges sent.
    fn exchange(
        mech: Mechanism,
        username: &str,
        password: &str,
        client_cb: Option<Vec<u8>>,
        server_cb: Option<Vec<u8>>,
        use_initial: bool,
    ) -> (Outcome, usize) {
        let mut rng = Rng::new(0x5eed);
        let mut c = ClientAuth::new(mech, username, password, &mut rng, client_cb);
        let mut s = ServerAuth::new(mech, &mut rng, "mx.example", server_cb);
        let initial = if use_initial {
            c.initial_response()
        } else {
            None
        };
        let mut step = s.start(initial.as_deref());
        let mut challenges = 0;
        for _ in 0..10 {
            step = match step {
                ServerStep::Challenge(ch) => {
                    challenges += 1;
                    match c.respond(&ch) {
                        Ok(r) => s.respond(&r),
                        Err(e) => return (Outcome::ClientError(e), challenges),
                    }
                }
                ServerStep::CheckPassword { username, password } => {
                    s.password_checked(username == USER && password == PASSWORD)
                }
                ServerStep::NeedCredentials { username, kind } => {
                    s.credentials(lookup(&username, kind))
                }
                ServerStep::Success {
                    username,
                    final_data,
                } => {
                    assert_eq!(username, USER);
                    assert_eq!(final_data.is_some(), mech.scram_hash().is_some());
                    if let Some(d) = final_data {
                        challenges += 1;
                        match c.respond(&d) {
                            Ok(r) => assert!(r.is_empty()),
                            Err(e) => return (Outcome::ClientError(e), challenges),
                        }
                    }
                    return (Outcome::Success(c.finish()), challenges);
                }
                ServerStep::Failure(f) => return (Outcome::ServerFailure(f), challenges),
            };
        }
        panic!("exchange did not end")
    }

    #[test]
    fn round_trip_every_mechanism() {
        for mech in Mechanism::ALL {
            for use_initial in [true, false] {
                // Channel binding where the mechanism needs it (plain SCRAM with it on both
                // sides is a downgrade, tested below).
                let tls = mech.needs_channel_binding().then(|| vec![9; 32]);
                let (ok, n_ok) =
                    exchange(mech, USER, PASSWORD, tls.clone(), tls.clone(), use_initial);
                assert_eq!(ok, Outcome::Success(Ok(())), "{mech} initial={use_initial}");

                let (wrong, n_wrong) =
                    exchange(mech, USER, "pencil2", tls.clone(), tls.clone(), use_initial);
                assert_eq!(
                    wrong,
                    Outcome::ServerFailure(AuthFailure::BadCredentials),
                    "{mech} wrong password"
                );

                // Unknown user: the same number of round trips as a wrong password, and the
                // same failure, so it is indistinguishable.
                let (unknown, n_unknown) = exchange(
                    mech,
                    "nobody",
                    PASSWORD,
                    tls.clone(),
                    tls.clone(),
                    use_initial,
                );
                assert_eq!(
                    unknown,
                    Outcome::ServerFailure(AuthFailure::BadCredentials),
                    "{mech} unknown"
                );
                assert_eq!(
                    n_unknown, n_wrong,
                    "{mech} unknown user fails at the same step"
                );
                // A success has one more round trip for SCRAM (server-final).
                let extra = usize::from(mech.scram_hash().is_some());
                assert_eq!(n_ok, n_wrong + extra, "{mech}");
            }
        }
    }

    #[test]
    fn round_trip_channel_binding() {
        let a = Some(vec![1; 32]);
        let b = Some(vec![2; 32]);
        for mech in [Mechanism::ScramSha1Plus, Mechanism::ScramSha256Plus] {
            assert_eq!(
                exchange(mech, USER, PASSWORD, a.clone(), b.clone(), true).0,
                Outcome::ServerFailure(AuthFailure::ChannelBindingMismatch),
                "{mech}: different TLS connections (a MITM)"
            );
            assert_eq!(
                exchange(mech, USER, PASSWORD, a.clone(), None, true).0,
                Outcome::ServerFailure(AuthFailure::ChannelBindingUnsupported),
                "{mech}: server without TLS"
            );
            assert_eq!(
                exchange(mech, USER, PASSWORD, None, a.clone(), true).0,
                Outcome::ClientError(ClientAuthError::ChannelBindingUnavailable),
                "{mech}: client without TLS"
            );
        }
        for mech in [Mechanism::ScramSha1, Mechanism::ScramSha256] {
            // The client could bind, the server advertises -PLUS, yet plain SCRAM is used:
            // someone stripped -PLUS from the EHLO list.
            assert_eq!(
                exchange(mech, USER, PASSWORD, a.clone(), a.clone(), true).0,
                Outcome::ServerFailure(AuthFailure::Downgrade),
                "{mech}"
            );
            // The client has TLS but the server does not offer -PLUS (no exporter): fine.
            assert_eq!(
                exchange(mech, USER, PASSWORD, a.clone(), None, true).0,
                Outcome::Success(Ok(())),
                "{mech}"
            );
            assert_eq!(
                exchange(mech, USER, PASSWORD, None, a.clone(), true).0,
                Outcome::Success(Ok(())),
                "{mech}"
            );
        }
    }

    #[test]
    fn round_trip_is_deterministic_per_seed() {
        let run = |seed| {
            let mut rng = Rng::new(seed);
            let mut c = ClientAuth::new(Mechanism::ScramSha256, USER, PASSWORD, &mut rng, None);
            c.initial_response()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn non_ascii_credentials_round_trip() {
        for mech in Mechanism::ALL {
            let cb = mech.needs_channel_binding().then(|| vec![3; 32]);
            let mut rng = Rng::new(3);
            let user = "j\u{f6}rg,=x";
            let pw = "p\u{e4}ss w\u{f6}rd";
            let mut c = ClientAuth::new(mech, user, pw, &mut rng, cb.clone());
            let mut s = ServerAuth::new(mech, &mut rng, "mx", cb);
            let ir = c.initial_response();
            let mut step = s.start(ir.as_deref());
            for _ in 0..6 {
                step =
                    match step {
                        ServerStep::Success { .. } | ServerStep::Failure(_) => break,
                        ServerStep::Challenge(ch) => s.respond(&c.respond(&ch).unwrap()),
                        ServerStep::CheckPassword { username, password } => {
                            s.password_checked(username == user && password == pw)
                        }
                        ServerStep::NeedCredentials { username, kind } => {
                            assert_eq!(username, user);
                            s.credentials(Some(match kind {
                                CredentialKind::CramMd5 => {
                                    StoredCredentials::CramMd5(derive_cram_md5(pw))
                                }
                                CredentialKind::ScramSha1 => StoredCredentials::Scram(
                                    derive_scram(ScramHash::Sha1, pw, b"s", 16),
                                ),
                                CredentialKind::ScramSha256 => StoredCredentials::Scram(
                                    derive_scram(ScramHash::Sha256, pw, b"s", 16),
                                ),
                            }))
                        }
                    };
            }
            assert!(
                matches!(&step, ServerStep::Success { username, .. } if username == user),
                "{mech}: {step:?}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Arbitrary challenges never panic the client.
        #[test]
        fn arbitrary_challenges_never_panic(
            mech_idx in 0usize..7,
            challenges in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 0..4),
            use_initial in any::<bool>(),
        ) {
            let mech = Mechanism::ALL[mech_idx];
            let mut c = ClientAuth::with_nonce(mech, "u", "p", "N", Some(vec![0; 32]));
            if use_initial {
                let _ = c.initial_response();
            }
            for ch in challenges {
                let _ = c.respond(&ch);
            }
            let _ = c.finish();
        }

        /// A structured server-first with arbitrary values never panics and, when it is
        /// accepted, the nonce extends the client's.
        #[test]
        fn server_first_soup(r in "[!-+\\--~]{0,12}", s in "[A-Za-z0-9+/=]{0,12}", i in "[0-9]{0,4}") {
            let mut c = ClientAuth::with_nonce(Mechanism::ScramSha1, "u", "p", "N", None);
            c.initial_response();
            let msg = format!("r=N{r},s={s},i={i}");
            if c.respond(msg.as_bytes()).is_ok() {
                prop_assert!(!r.is_empty());
            }
        }
    }
}
