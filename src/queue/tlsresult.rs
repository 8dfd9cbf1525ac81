//! The TLS mode and result of each connection of a delivery attempt: kept in the attempt
//! history and stored as [`ReportKind::TlsResult`](rmox_storage::ReportKind) records
//! (one JSON object per connection, counts of 1, aggregated when TLS reports are made).

use rmox_core::client::{ClientError, Stage};
use rmox_core::tls::TlsInfo;

/// The policy a connection was made under (RFC 8460 `policy-type`). Delivery applies no
/// MTA-STS or DANE policy yet, so only [`TlsPolicy::NoPolicy`] is produced for now.
#[allow(dead_code)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsPolicy {
    /// No MTA-STS or DANE policy applied.
    NoPolicy,
    /// An MTA-STS policy.
    Sts,
    /// DANE TLSA records.
    Tlsa,
}

impl TlsPolicy {
    /// The RFC 8460 name.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsPolicy::NoPolicy => "no-policy-found",
            TlsPolicy::Sts => "sts",
            TlsPolicy::Tlsa => "tlsa",
        }
    }
}

/// How a connection's TLS ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsResult {
    /// TLS was established.
    Established {
        /// Protocol version.
        version: String,
        /// Cipher suite.
        cipher: String,
    },
    /// The session went on without TLS (opportunistic, STARTTLS not offered; or TLS
    /// skipped).
    Plaintext,
    /// TLS was attempted and failed.
    Failed {
        /// The RFC 8460 result type, e.g. `certificate-not-trusted`.
        result_type: &'static str,
        /// What went wrong.
        detail: String,
    },
}

/// The TLS of one connection of a delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsAttempt {
    /// The domain whose policy applied (the recipient domain, or the relay host).
    pub policy_domain: String,
    /// The host connected to.
    pub mx_host: String,
    /// Its address.
    pub receiving_ip: String,
    /// The policy applied.
    pub policy: TlsPolicy,
    /// `opportunistic`, `required`, `skip` or `implicit`.
    pub mode: &'static str,
    /// The result.
    pub result: TlsResult,
}

// One implementation of each, in core's delivery machine (the one delivery will use).
pub use rmox_core::delivery::mode_name;

/// The TLS result of a connection: `info` when the handshake completed, else from the
/// error that ended it. `None` when the connection ended before TLS could be tried (a
/// refused greeting, a timeout before EHLO) and no TLS was established.
pub fn classify(info: Option<&TlsInfo>, error: Option<&ClientError>) -> Option<TlsResult> {
    if let Some(i) = info {
        return Some(TlsResult::Established {
            version: i.version.clone(),
            cipher: i.cipher.clone(),
        });
    }
    match error {
        Some(e) if e.is_tls() => {
            let (result_type, detail) = rmox_core::delivery::tls_failure(e)?;
            Some(TlsResult::Failed {
                result_type,
                detail,
            })
        }
        Some(e) if matches!(e.stage, Stage::Connect | Stage::Greeting | Stage::Ehlo) => None,
        _ => Some(TlsResult::Plaintext),
    }
}

impl TlsAttempt {
    /// The history text of the result.
    pub fn result_text(&self) -> String {
        match &self.result {
            TlsResult::Established { version, cipher } => format!("{version} {cipher}"),
            TlsResult::Plaintext => "plaintext".into(),
            TlsResult::Failed {
                result_type,
                detail,
            } => format!("failed: {result_type}: {detail}"),
        }
    }

    /// Whether the attempt belongs in TLS reports: TLS was established or failed.
    pub fn is_reportable(&self) -> bool {
        !matches!(self.result, TlsResult::Plaintext)
    }

    /// The stored report record.
    pub fn to_json(&self) -> Vec<u8> {
        let (success, failure, result_type, detail) = match &self.result {
            TlsResult::Failed {
                result_type,
                detail,
            } => (0, 1, Some(*result_type), Some(detail.as_str())),
            _ => (1, 0, None, None),
        };
        let v = serde_json::json!({
            "policy-type": self.policy.as_str(),
            "policy-domain": self.policy_domain,
            "mx-host": self.mx_host,
            "receiving-ip": self.receiving_ip,
            "mode": self.mode,
            "success-count": success,
            "failure-count": failure,
            "result-type": result_type,
            "failure-reason": detail,
        });
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmox_core::client::ErrorKind;
    use rmox_core::delivery::result_type;

    #[test]
    fn result_types() {
        let cases = [
            ("STARTTLS refused", "starttls-not-supported"),
            (
                "invalid peer certificate: UnknownIssuer",
                "certificate-not-trusted",
            ),
            (
                "invalid peer certificate: NotValidForName",
                "certificate-host-mismatch",
            ),
            ("invalid peer certificate: Expired", "certificate-expired"),
            (
                "received fatal alert: HandshakeFailure",
                "validation-failure",
            ),
        ];
        for (d, want) in cases {
            assert_eq!(result_type(d), want, "{d}");
        }
    }

    #[test]
    fn classify_cases() {
        let info = TlsInfo {
            version: "TLSv1_3".into(),
            cipher: "TLS13_AES_128_GCM_SHA256".into(),
            sni: None,
        };
        let err = |stage, kind| ClientError {
            stage,
            permanent: false,
            kind,
            reply: None,
        };
        let tls_err = err(
            Stage::StartTls,
            ErrorKind::PeerIncompatible(rmox_core::client::PeerIncompatible::StartTls),
        );
        let greeting = err(
            Stage::Greeting,
            ErrorKind::Transport(rmox_core::client::Transport::Closed),
        );
        let rcpt = err(Stage::Rcpt, ErrorKind::TemporaryReply);
        assert!(matches!(
            classify(Some(&info), Some(&rcpt)),
            Some(TlsResult::Established { .. })
        ));
        assert!(matches!(
            classify(None, Some(&tls_err)),
            Some(TlsResult::Failed {
                result_type: "starttls-not-supported",
                ..
            })
        ));
        assert_eq!(classify(None, Some(&greeting)), None);
        assert_eq!(classify(None, Some(&rcpt)), Some(TlsResult::Plaintext));
        assert_eq!(classify(None, None), Some(TlsResult::Plaintext));
    }

    #[test]
    fn json_record() {
        let a = TlsAttempt {
            policy_domain: "example.net".into(),
            mx_host: "mx.example.net".into(),
            receiving_ip: "127.0.0.1".into(),
            policy: TlsPolicy::NoPolicy,
            mode: "required",
            result: TlsResult::Failed {
                result_type: "certificate-not-trusted",
                detail: "UnknownIssuer".into(),
            },
        };
        let v: serde_json::Value = serde_json::from_slice(&a.to_json()).unwrap();
        assert_eq!(v["policy-type"], "no-policy-found");
        assert_eq!(v["failure-count"], 1);
        assert_eq!(v["success-count"], 0);
        assert_eq!(v["result-type"], "certificate-not-trusted");
        assert!(a.is_reportable());
        assert_eq!(
            a.result_text(),
            "failed: certificate-not-trusted: UnknownIssuer"
        );
    }
}
