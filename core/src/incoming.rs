//! Port 25 policy on the incoming checks' verdicts, decided after DATA once the local
//! recipients are known: a DMARC `reject` policy (when `dmarc_reject` is on), a DNSBL
//! listing, and a failed iprev of a first-time sender (when
//! `require_iprev_for_unknown_senders` is on).
//!
//! Pure: whether the sender is known (an account here got mail from its domain before) is
//! a fact the caller looks up in storage, and only when [`IncomingPolicy::needs_sender_known`]
//! says the answer matters.

use crate::dnsbl::DnsblStatus;
use crate::iprev::IprevResult;
use crate::server::Verdicts;
use crate::smtp::{Enhanced, Reply};

/// The configuration switches of the incoming policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IncomingPolicy {
    /// Refuse (550) a message whose DMARC evaluation says reject.
    pub dmarc_reject: bool,
    /// Refuse (451) a message from a first-time sender whose IP has no valid reverse DNS.
    pub require_iprev_for_unknown_senders: bool,
}

impl IncomingPolicy {
    /// Whether the message is refused for its DMARC policy (then the evaluation is still
    /// stored for reporting).
    pub fn dmarc_rejects(&self, v: &Verdicts) -> bool {
        self.dmarc_reject && v.dmarc.as_ref().is_some_and(|d| d.is_reject())
    }

    /// Whether [`IncomingPolicy::decide`] needs to know if the sender is known: iprev did
    /// not pass and the switch requires it for unknown senders.
    pub fn needs_sender_known(&self, v: &Verdicts) -> bool {
        let iprev_pass = matches!(v.iprev, Some(IprevResult::Pass(_)) | None);
        !iprev_pass && self.require_iprev_for_unknown_senders
    }

    /// The verdict on a message: `Err` with the reply that refuses it. `sender_known`: an
    /// account here got mail from the MAIL FROM domain before (only consulted when
    /// [`IncomingPolicy::needs_sender_known`]). DMARC first, then DNSBL, then iprev.
    pub fn decide(&self, v: &Verdicts, sender_known: bool) -> Result<(), Reply> {
        let reply = |code, e: (u8, u16, u16), text: String| {
            Reply::new(code, Some(Enhanced::new(e.0, e.1, e.2)), text)
        };
        if self.dmarc_rejects(v) {
            return Err(reply(
                550,
                (5, 7, 1),
                format!(
                    "rejecting per DMARC policy of {}",
                    v.from_domain.as_deref().unwrap_or("the From domain")
                ),
            ));
        }
        for (zone, status) in v.dnsbl.iter().flatten() {
            if let DnsblStatus::Fail(reason) = status {
                return Err(reply(
                    451,
                    (4, 7, 1),
                    format!("your ip is listed in {zone}: {reason}"),
                ));
            }
        }
        if self.needs_sender_known(v) && !sender_known {
            return Err(reply(
                451,
                (4, 7, 0),
                "your ip has no valid reverse dns, required for first-time senders, try again later"
                    .into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dmarc::{DmarcResult, DmarcStatus, Policy};

    fn dmarc(reject: bool) -> DmarcResult {
        let p = if reject { Policy::Reject } else { Policy::None };
        DmarcResult {
            status: if reject {
                DmarcStatus::Fail
            } else {
                DmarcStatus::Pass
            },
            disposition: p,
            requested: p,
            policy_domain: "example.org".into(),
            record: None,
            dkim_aligned: false,
            spf_aligned: false,
            testing: false,
            error: None,
        }
    }

    /// The verdict table: (switches, dmarc reject?, dnsbl listed?, iprev, known) -> reply
    /// code or accept.
    #[test]
    fn verdict_table() {
        let on = IncomingPolicy {
            dmarc_reject: true,
            require_iprev_for_unknown_senders: true,
        };
        let off = IncomingPolicy::default();
        let pass = Some(IprevResult::Pass(vec!["host.example".into()]));
        let fail = Some(IprevResult::Fail);
        let temp = Some(IprevResult::TempError("timeout".into()));
        #[rustfmt::skip]
        type Case = (IncomingPolicy, Option<bool>, bool, Option<IprevResult>, bool, Option<u16>);
        let cases: Vec<Case> = vec![
            // No verdicts at all: accept.
            (on, None, false, None, false, None),
            (on, Some(false), false, pass.clone(), false, None),
            // DMARC reject refuses only with the switch on.
            (on, Some(true), false, pass.clone(), true, Some(550)),
            (off, Some(true), false, pass.clone(), true, None),
            // A DNSBL listing refuses temporarily, whatever the switches.
            (off, None, true, pass.clone(), true, Some(451)),
            (on, Some(true), true, pass.clone(), true, Some(550)),
            // iprev fails: unknown senders refused when required; known ones accepted.
            (on, None, false, fail.clone(), false, Some(451)),
            (on, None, false, temp.clone(), false, Some(451)),
            (on, None, false, fail.clone(), true, None),
            (off, None, false, fail.clone(), false, None),
            // iprev not evaluated counts as pass.
            (on, None, false, None, false, None),
        ];
        for (i, (policy, reject, listed, iprev, known, want)) in cases.into_iter().enumerate() {
            let v = Verdicts {
                dmarc: reject.map(dmarc),
                dnsbl: Some(vec![
                    ("ok.example".into(), DnsblStatus::Pass),
                    (
                        "bl.example".into(),
                        if listed {
                            DnsblStatus::Fail("spam".into())
                        } else {
                            DnsblStatus::Pass
                        },
                    ),
                ]),
                iprev,
                from_domain: Some("example.org".into()),
                ..Verdicts::default()
            };
            let got = policy.decide(&v, known).err().map(|r| r.code);
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn reply_texts() {
        let on = IncomingPolicy {
            dmarc_reject: true,
            require_iprev_for_unknown_senders: true,
        };
        let v = Verdicts {
            dmarc: Some(dmarc(true)),
            from_domain: Some("example.org".into()),
            ..Verdicts::default()
        };
        assert!(on.dmarc_rejects(&v));
        let r = on.decide(&v, true).unwrap_err();
        assert_eq!(
            r.to_string(),
            "550 5.7.1 rejecting per DMARC policy of example.org"
        );
        let v = Verdicts {
            dnsbl: Some(vec![(
                "bl.example".into(),
                DnsblStatus::Fail("listed".into()),
            )]),
            ..Verdicts::default()
        };
        assert!(!on.dmarc_rejects(&v));
        let r = on.decide(&v, true).unwrap_err();
        assert_eq!(
            r.to_string(),
            "451 4.7.1 your ip is listed in bl.example: listed"
        );
        let v = Verdicts {
            iprev: Some(IprevResult::Fail),
            ..Verdicts::default()
        };
        assert!(on.needs_sender_known(&v));
        let r = on.decide(&v, false).unwrap_err();
        assert_eq!(r.code, 451);
        assert_eq!(r.enhanced, Some(Enhanced::new(4, 7, 0)));
    }
}
