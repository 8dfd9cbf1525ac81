//! SASL mechanisms for SMTP AUTH (RFC 4954): PLAIN (RFC 4616), LOGIN
//! (draft-murchison-sasl-login), CRAM-MD5 (RFC 2195), SCRAM-SHA-1 and SCRAM-SHA-256
//! (RFC 5802, RFC 7677) and their -PLUS variants with `tls-exporter` channel binding
//! (RFC 9266).
//!
//! Both sides are small sans-IO machines over DECODED bytes: the SMTP session machines do
//! the base64, the `*` cancellation and the 334/235/535 lines.
//!
//! * Server: [`ServerAuth::new`], then [`ServerAuth::start`] with the optional initial
//!   response, then answer every [`ServerStep`]: a `Challenge` with the client's next
//!   response ([`ServerAuth::respond`]), `CheckPassword` with
//!   [`ServerAuth::password_checked`], `NeedCredentials` with [`ServerAuth::credentials`],
//!   until `Success` or `Failure`. The server never needs the plain password for CRAM-MD5
//!   and SCRAM: it is given [`StoredCredentials`].
//! * Client: [`ClientAuth::new`], send [`ClientAuth::initial_response`] with AUTH (if any),
//!   answer each 334 with [`ClientAuth::respond`], and after 235 call
//!   [`ClientAuth::finish`] (for SCRAM it checks that the server proved it knows the keys).
//!
//! Randomness (nonces, the CRAM-MD5 challenge) comes from a [`crate::Rng`] passed in.

mod client;
mod cram;
mod md5;
mod scram;
mod server;

pub use client::{ClientAuth, ClientAuthError, SCRAM_MAX_ITERATIONS};
pub use cram::{derive_cram_md5, CramMd5Credentials, CRAM_MD5_CREDENTIALS_LEN};
pub use scram::{derive_scram, ScramCredentials, ScramHash, SCRAM_DEFAULT_ITERATIONS};
pub use server::{AuthFailure, ServerAuth, ServerStep};

/// The `tls-exporter` channel binding label (RFC 9266): the runtime exports 32 bytes with
/// this label and no context, and passes them to [`ServerAuth::new`] / [`ClientAuth::new`].
pub const TLS_EXPORTER_LABEL: &str = "EXPORTER-Channel-Binding";
/// Length of the `tls-exporter` channel binding data (RFC 9266).
pub const TLS_EXPORTER_LEN: usize = 32;

/// A SASL mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// PLAIN (RFC 4616).
    Plain,
    /// LOGIN (draft-murchison-sasl-login).
    Login,
    /// CRAM-MD5 (RFC 2195).
    CramMd5,
    /// SCRAM-SHA-1 (RFC 5802).
    ScramSha1,
    /// SCRAM-SHA-1-PLUS (RFC 5802 with `tls-exporter`, RFC 9266).
    ScramSha1Plus,
    /// SCRAM-SHA-256 (RFC 7677).
    ScramSha256,
    /// SCRAM-SHA-256-PLUS (RFC 7677 with `tls-exporter`, RFC 9266).
    ScramSha256Plus,
}

impl Mechanism {
    /// Every mechanism.
    pub const ALL: [Mechanism; 7] = [
        Mechanism::Plain,
        Mechanism::Login,
        Mechanism::CramMd5,
        Mechanism::ScramSha1,
        Mechanism::ScramSha1Plus,
        Mechanism::ScramSha256,
        Mechanism::ScramSha256Plus,
    ];

    /// The IANA name, upper case (`"SCRAM-SHA-256-PLUS"`).
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::CramMd5 => "CRAM-MD5",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::ScramSha1Plus => "SCRAM-SHA-1-PLUS",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
        }
    }

    /// The mechanism with this name, ignoring ASCII case.
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// Whether the mechanism needs `tls-exporter` channel binding (the -PLUS variants).
    pub fn needs_channel_binding(self) -> bool {
        matches!(self, Mechanism::ScramSha1Plus | Mechanism::ScramSha256Plus)
    }

    /// Whether the mechanism sends the password itself (PLAIN, LOGIN): only offer these
    /// under TLS.
    pub fn is_plaintext(self) -> bool {
        matches!(self, Mechanism::Plain | Mechanism::Login)
    }

    /// Preference rank, higher is stronger: SCRAM-SHA-256-PLUS > SCRAM-SHA-1-PLUS >
    /// SCRAM-SHA-256 > SCRAM-SHA-1 > CRAM-MD5 > PLAIN > LOGIN.
    pub fn strength(self) -> u8 {
        match self {
            Mechanism::Login => 1,
            Mechanism::Plain => 2,
            Mechanism::CramMd5 => 3,
            Mechanism::ScramSha1 => 4,
            Mechanism::ScramSha256 => 5,
            Mechanism::ScramSha1Plus => 6,
            Mechanism::ScramSha256Plus => 7,
        }
    }

    /// The strongest of `candidates` (e.g. the intersection of what both sides support).
    pub fn strongest(candidates: impl IntoIterator<Item = Mechanism>) -> Option<Mechanism> {
        candidates.into_iter().max_by_key(|m| m.strength())
    }

    /// The kind of stored credentials the server needs, `None` for PLAIN and LOGIN (which
    /// check the password itself).
    pub fn credential_kind(self) -> Option<CredentialKind> {
        match self {
            Mechanism::Plain | Mechanism::Login => None,
            Mechanism::CramMd5 => Some(CredentialKind::CramMd5),
            Mechanism::ScramSha1 | Mechanism::ScramSha1Plus => Some(CredentialKind::ScramSha1),
            Mechanism::ScramSha256 | Mechanism::ScramSha256Plus => {
                Some(CredentialKind::ScramSha256)
            }
        }
    }

    /// The SCRAM hash, `None` for the non-SCRAM mechanisms.
    pub(crate) fn scram_hash(self) -> Option<ScramHash> {
        match self {
            Mechanism::ScramSha1 | Mechanism::ScramSha1Plus => Some(ScramHash::Sha1),
            Mechanism::ScramSha256 | Mechanism::ScramSha256Plus => Some(ScramHash::Sha256),
            _ => None,
        }
    }
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which stored credentials a mechanism needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    /// [`ScramCredentials`] with [`ScramHash::Sha1`].
    ScramSha1,
    /// [`ScramCredentials`] with [`ScramHash::Sha256`].
    ScramSha256,
    /// [`CramMd5Credentials`].
    CramMd5,
}

/// A user's stored secret for one mechanism family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoredCredentials {
    /// SCRAM keys.
    Scram(ScramCredentials),
    /// CRAM-MD5 HMAC states.
    CramMd5(CramMd5Credentials),
}

impl StoredCredentials {
    /// What kind of credentials these are.
    pub fn kind(&self) -> CredentialKind {
        match self {
            StoredCredentials::Scram(c) => match c.hash {
                ScramHash::Sha1 => CredentialKind::ScramSha1,
                ScramHash::Sha256 => CredentialKind::ScramSha256,
            },
            StoredCredentials::CramMd5(_) => CredentialKind::CramMd5,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_case_insensitively() {
        for m in Mechanism::ALL {
            assert_eq!(Mechanism::from_name(m.name()), Some(m));
            assert_eq!(Mechanism::from_name(&m.name().to_lowercase()), Some(m));
            assert_eq!(m.to_string(), m.name());
        }
        assert_eq!(
            Mechanism::from_name("scram-sha-256-plus"),
            Some(Mechanism::ScramSha256Plus)
        );
        for bad in ["", "SCRAM", "SCRAM-SHA-512", "PLAIN ", "GSSAPI", "XOAUTH2"] {
            assert_eq!(Mechanism::from_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn strength_order_and_properties() {
        let mut all = Mechanism::ALL;
        all.sort_by_key(|m| std::cmp::Reverse(m.strength()));
        assert_eq!(
            all,
            [
                Mechanism::ScramSha256Plus,
                Mechanism::ScramSha1Plus,
                Mechanism::ScramSha256,
                Mechanism::ScramSha1,
                Mechanism::CramMd5,
                Mechanism::Plain,
                Mechanism::Login,
            ]
        );
        assert_eq!(
            Mechanism::strongest([Mechanism::Login, Mechanism::CramMd5, Mechanism::Plain]),
            Some(Mechanism::CramMd5)
        );
        assert_eq!(Mechanism::strongest([]), None);
        let plus: Vec<_> = Mechanism::ALL
            .into_iter()
            .filter(|m| m.needs_channel_binding())
            .collect();
        assert_eq!(plus, [Mechanism::ScramSha1Plus, Mechanism::ScramSha256Plus]);
        let plain: Vec<_> = Mechanism::ALL
            .into_iter()
            .filter(|m| m.is_plaintext())
            .collect();
        assert_eq!(plain, [Mechanism::Plain, Mechanism::Login]);
        assert_eq!(Mechanism::Plain.credential_kind(), None);
        assert_eq!(
            Mechanism::ScramSha1Plus.credential_kind(),
            Some(CredentialKind::ScramSha1)
        );
        assert_eq!(
            Mechanism::ScramSha256.credential_kind(),
            Some(CredentialKind::ScramSha256)
        );
        assert_eq!(
            Mechanism::CramMd5.credential_kind(),
            Some(CredentialKind::CramMd5)
        );
    }

    #[test]
    fn stored_credentials_kind() {
        let s1 = StoredCredentials::Scram(derive_scram(ScramHash::Sha1, "p", b"s", 1));
        let s2 = StoredCredentials::Scram(derive_scram(ScramHash::Sha256, "p", b"s", 1));
        let c = StoredCredentials::CramMd5(derive_cram_md5("p"));
        assert_eq!(s1.kind(), CredentialKind::ScramSha1);
        assert_eq!(s2.kind(), CredentialKind::ScramSha256);
        assert_eq!(c.kind(), CredentialKind::CramMd5);
    }
}
