//! Port 25 policy on the incoming checks' verdicts, decided after DATA once the local
//! recipients are known: a DMARC `reject` policy (when `dmarc_reject` is on), a DNSBL
//! listing, and a failed iprev of a first-time sender (when
//! `require_iprev_for_unknown_senders` is on).
//!
//! Pure: whether the sender is known (an account here got mail from its domain before) is
//! a fact the caller looks up in storage, and only when [`IncomingPolicy::needs_sender_known`]
//! says the answer matters.
//!
//! [`IncomingPolicy::analyze`] is the whole decision for one receiving account, with the
//! account's [`crate::reputation`] outcome: conclusive history decides before DNSBL and
//! iprev do; weak or no history makes an SPF failure or a bad reverse DNS count.

use crate::dnsbl::DnsblStatus;
use crate::iprev::IprevResult;
use crate::reputation;
use crate::server::Verdicts;
use crate::smtp::{Enhanced, Reply};
use crate::spf::SpfStatus;

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
            return Err(iprev_reply());
        }
        Ok(())
    }

    /// The decision for one receiving account: `rep` is the account's reputation outcome
    /// (`None` when reputation is off), `forwarded` that the message came through a
    /// forwarder (its DMARC result and the forwarder's identity are not held against it),
    /// `sender_known` as for [`IncomingPolicy::decide`]. In order:
    ///
    /// 1. a DMARC `reject` policy (not for forwarded mail): 550;
    /// 2. conclusive reputation: accept, or 451 for junk;
    /// 3. with weak or no reputation (DKIM/SPF, IP or none): an SPF fail or softfail is
    ///    451, and so is a junk signal from a client without valid reverse DNS;
    /// 4. a DNSBL listing: 451;
    /// 5. no valid reverse DNS for a first-time sender (when required): 451;
    /// 6. otherwise accept: no bad signals.
    pub fn analyze(
        &self,
        v: &Verdicts,
        rep: Option<&reputation::Outcome>,
        forwarded: bool,
        sender_known: bool,
    ) -> Decision {
        self.analyze_with_pass(v, rep, forwarded, sender_known, None)
    }

    /// [`IncomingPolicy::analyze`] for an account with subjectpass on (`pass`): a message
    /// whose Subject holds a valid pass is accepted when only weak signals were against it
    /// (after rule 3); a DNSBL-listed sender with a DMARC pass and no history at all gets a
    /// `550 5.7.1` carrying a pass (after rule 4), so that a human can send again with it.
    pub fn analyze_with_pass(
        &self,
        v: &Verdicts,
        rep: Option<&reputation::Outcome>,
        forwarded: bool,
        sender_known: bool,
        pass: Option<&PassCheck<'_>>,
    ) -> Decision {
        self.analyze_all(v, rep, forwarded, sender_known, pass, None)
    }

    /// [`IncomingPolicy::analyze_with_pass`] with the account's junk filter (`content`):
    /// when reputation was not conclusive and nothing before refused, the message's junk
    /// probability is held against the threshold, made stricter (0.25) for a client
    /// without valid reverse DNS, a connection without TLS, or a message whose To/Cc does
    /// not name the recipient (not for forwarded mail). Above it the message is refused
    /// (451, `junk-content` or `junk-content-strict`), unless the filter has too little ham
    /// to be significant and the reverse DNS is fine. Content judged junk gets no
    /// subjectpass (a pass is for a listed IP, not for spammy words). Below it, the DNSBL
    /// rule follows as before.
    pub fn analyze_all(
        &self,
        v: &Verdicts,
        rep: Option<&reputation::Outcome>,
        forwarded: bool,
        sender_known: bool,
        pass: Option<&PassCheck<'_>>,
        content: Option<&ContentCheck>,
    ) -> Decision {
        let mut text = Vec::new();
        if forwarded {
            text.push("forwarded message: dmarc result not used".to_string());
        } else if self.dmarc_rejects(v) {
            text.push("message fails the dmarc policy of its domain, which asks to reject".into());
            let r = Reply::new(
                550,
                Some(Enhanced::new(5, 7, 1)),
                format!(
                    "rejecting per DMARC policy of {}",
                    v.from_domain.as_deref().unwrap_or("the From domain")
                ),
            );
            return Decision::refuse(r, "dmarc-policy", text);
        }
        let iprev_pass = matches!(v.iprev, Some(IprevResult::Pass(_)) | None);
        if let Some(r) = rep {
            let opinion = match r.junk {
                Some(true) => "junk",
                Some(false) => "not junk",
                None => "no opinion",
            };
            let strength = if r.conclusive {
                "conclusive"
            } else {
                "inconclusive"
            };
            text.push(format!("reputation: {opinion}, {strength}: {}", r.reason));
            if r.conclusive {
                return match r.junk {
                    Some(true) => Decision::refuse(junk_reply(), r.method.as_str(), text),
                    _ => Decision::accept(r.method.as_str(), text),
                };
            }
            if r.method.is_weak() {
                let spf_failed = v
                    .spf
                    .as_ref()
                    .is_some_and(|s| matches!(s.result, SpfStatus::Fail | SpfStatus::Softfail));
                if spf_failed {
                    text.push("no earlier messages from the sender, and spf (soft)fails".into());
                    return Decision::refuse(junk_reply(), "spf-policy", text);
                }
                if !iprev_pass && r.junk == Some(true) {
                    text.push("junk signal and no valid reverse dns".into());
                    return Decision::refuse(junk_reply(), "iprev", text);
                }
            }
        }
        if let Some(p) = pass {
            let valid = match (p.from, p.subject) {
                (Some(from), Some(subject)) => {
                    crate::subjectpass::verify(p.key, from, subject, p.period_secs, p.now)
                }
                _ => false,
            };
            if valid {
                text.push("message has a valid subjectpass in its subject".into());
                return Decision::accept("subjectpass", text);
            }
        }
        let weak = rep.is_none_or(|r| r.method.is_weak());
        let suspicious_iprev = weak && !iprev_pass;
        let dmarc_pass = v
            .dmarc
            .as_ref()
            .is_some_and(|d| d.status == crate::dmarc::DmarcStatus::Pass);
        let no_history = rep.is_some_and(|r| r.method == reputation::Method::None);
        if let Some(c) = content {
            let (mut threshold, mut strict) = (c.threshold, "");
            if threshold > STRICT_THRESHOLD {
                if suspicious_iprev {
                    strict = " (stricter: no valid reverse dns)";
                } else if !c.tls {
                    strict = " (stricter: no tls)";
                } else if !forwarded && !c.recipient_in_to_cc {
                    strict = " (stricter: recipient not in to/cc)";
                }
                if !strict.is_empty() {
                    threshold = STRICT_THRESHOLD;
                }
            }
            let accept = c.probability <= threshold || (!c.significant && !suspicious_iprev);
            text.push(format!(
                "content: {}{}, spamscore {:.2}, threshold {:.2}{strict}; {}",
                if c.probability > threshold {
                    "junk"
                } else {
                    "not junk"
                },
                if c.significant {
                    ""
                } else {
                    " (not significant)"
                },
                c.probability,
                threshold,
                c.words,
            ));
            if !accept {
                let reason = if strict.is_empty() {
                    "junk-content"
                } else {
                    "junk-content-strict"
                };
                return Decision::refuse(junk_reply(), reason, text);
            }
        }
        for (zone, status) in v.dnsbl.iter().flatten() {
            if let DnsblStatus::Fail(reason) = status {
                text.push(format!("ip listed in {zone}"));
                if let (Some(p), Some(from), true, true) =
                    (pass, pass.and_then(|p| p.from), dmarc_pass, no_history)
                {
                    text.push("refused with a subjectpass for the sender".into());
                    return Decision::refuse(give_pass(p, from), "give-subjectpass", text);
                }
                let r = Reply::new(
                    451,
                    Some(Enhanced::new(4, 7, 1)),
                    format!("your ip is listed in {zone}: {reason}"),
                );
                return Decision::refuse(r, "dns-blocklisted", text);
            }
        }
        if self.needs_sender_known(v) && !sender_known {
            text.push("first-time sender without valid reverse dns".into());
            return Decision::refuse(iprev_reply(), "iprev", text);
        }
        text.push("no bad signals".into());
        Decision::accept("no-bad-signals", text)
    }
}

/// The junk threshold for suspicious circumstances (mox's): no valid reverse DNS, no TLS,
/// or the recipient not in To/Cc.
pub const STRICT_THRESHOLD: f64 = 0.25;

/// What the account's junk filter says about the message ([`IncomingPolicy::analyze_all`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ContentCheck {
    /// The junk probability, 0 to 1 ([`crate::junk::classify`]).
    pub probability: f64,
    /// The filter had enough ham trained to count.
    pub significant: bool,
    /// The account's threshold, with a little random jitter added by the caller (so that
    /// a spammer cannot find the exact edge).
    pub threshold: f64,
    /// The message came over TLS.
    pub tls: bool,
    /// The message's To or Cc names the recipient.
    pub recipient_in_to_cc: bool,
    /// The deciding words, for the reason text ([`crate::junk::Classification::words`]).
    pub words: String,
}

/// The 550 that hands a sender a subjectpass.
fn give_pass(p: &PassCheck<'_>, from: &str) -> Reply {
    Reply::new(
        550,
        Some(Enhanced::new(5, 7, 1)),
        format!(
            "{}{}",
            crate::subjectpass::EXPLANATION,
            crate::subjectpass::generate(p.key, from, p.now)
        ),
    )
}

fn iprev_reply() -> Reply {
    Reply::new(
        451,
        Some(Enhanced::new(4, 7, 0)),
        "your ip has no valid reverse dns, required for first-time senders, try again later",
    )
}

/// The decision for one receiving account ([`IncomingPolicy::analyze`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Accept, or the reply that refuses.
    pub verdict: Result<(), Reply>,
    /// The rule that decided: a [`reputation::Method`] name, or `dmarc-policy`,
    /// `spf-policy`, `iprev`, `dns-blocklisted`, `no-bad-signals`.
    pub reason: &'static str,
    /// What was considered, for people (the `X-Rmox-Reason` header, logs).
    pub text: Vec<String>,
}

impl Decision {
    fn accept(reason: &'static str, text: Vec<String>) -> Decision {
        Decision {
            verdict: Ok(()),
            reason,
            text,
        }
    }

    fn refuse(reply: Reply, reason: &'static str, text: Vec<String>) -> Decision {
        Decision {
            verdict: Err(reply),
            reason,
            text,
        }
    }

    /// The header that records why a message was accepted: `X-Rmox-Reason: REASON;
    /// TEXT; ...` (CRLF-terminated, folded, control characters removed).
    pub fn header(&self) -> String {
        let mut h = format!("X-Rmox-Reason: {}", self.reason);
        for t in &self.text {
            h.push_str(";\r\n\t");
            h.extend(t.chars().filter(|c| !c.is_control()));
        }
        h.push_str("\r\n");
        h
    }
}

/// Subjectpass for one account ([`IncomingPolicy::analyze_with_pass`]).
#[derive(Clone, Debug)]
pub struct PassCheck<'a> {
    /// The account's secret key.
    pub key: &'a [u8],
    /// How long a pass is valid, in seconds.
    pub period_secs: i64,
    /// Now.
    pub now: crate::time::UnixTime,
    /// The message's From address (exactly one), lowercase.
    pub from: Option<&'a str>,
    /// The message's Subject.
    pub subject: Option<&'a str>,
}

/// The delay of first-time senders: `Err` (451) until `delay_secs` after the sender was
/// first seen; a sender that tries again after that gets through (greylisting: what sends
/// once and never retries is mostly spam).
pub fn first_time_delay(
    first_seen: crate::time::UnixTime,
    now: crate::time::UnixTime,
    delay_secs: i64,
) -> Result<(), Reply> {
    let waited = now.0.saturating_sub(first_seen.0);
    if waited >= delay_secs {
        return Ok(());
    }
    Err(Reply::new(
        451,
        Some(Enhanced::new(4, 7, 1)),
        format!(
            "first-time sender: try again in {} seconds",
            delay_secs - waited
        ),
    ))
}

/// The refusal for junk: temporary, and saying nothing that helps a spammer tune.
fn junk_reply() -> Reply {
    Reply::new(
        451,
        Some(Enhanced::new(4, 3, 0)),
        "error processing, try again later",
    )
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

#[cfg(test)]
mod analyze_tests {
    //! [`IncomingPolicy::analyze`]: the order of the rules, as a table.

    use super::*;
    use crate::dmarc::{DmarcResult, DmarcStatus, Policy};
    use crate::reputation::{Method, Outcome};
    use crate::spf::SpfResult;

    fn rep(junk: Option<bool>, conclusive: bool, method: Method) -> Outcome {
        Outcome {
            junk,
            conclusive,
            method,
            reason: "test".into(),
        }
    }

    fn verdicts(dmarc_reject: bool, spf: SpfStatus, iprev_ok: bool, listed: bool) -> Verdicts {
        Verdicts {
            dmarc: dmarc_reject.then(|| DmarcResult {
                status: DmarcStatus::Fail,
                disposition: Policy::Reject,
                requested: Policy::Reject,
                policy_domain: "example.org".into(),
                record: None,
                dkim_aligned: false,
                spf_aligned: false,
                testing: false,
                error: None,
            }),
            spf: Some(SpfResult {
                result: spf,
                mechanism: None,
                explanation: None,
                lookups: 1,
                void_lookups: 0,
                problem: None,
            }),
            iprev: Some(if iprev_ok {
                IprevResult::Pass(vec!["mx.example.org".into()])
            } else {
                IprevResult::Fail
            }),
            dnsbl: Some(vec![(
                "bl.example".into(),
                if listed {
                    DnsblStatus::Fail("listed".into())
                } else {
                    DnsblStatus::Pass
                },
            )]),
            from_domain: Some("example.org".into()),
            ..Verdicts::default()
        }
    }

    #[test]
    fn rules_in_order() {
        let policy = IncomingPolicy {
            dmarc_reject: true,
            require_iprev_for_unknown_senders: true,
        };
        let good = rep(Some(false), true, Method::MsgFromFull);
        let bad = rep(Some(true), true, Method::MsgFromFull);
        let weak_junk = rep(Some(true), false, Method::Ip2);
        let none = rep(None, false, Method::None);
        let pass = SpfStatus::Pass;
        let fail = SpfStatus::Fail;
        type Case<'a> = (
            Verdicts,
            Option<&'a Outcome>,
            bool,
            bool,
            Option<u16>,
            &'a str,
        );
        #[rustfmt::skip]
        let cases: Vec<Case<'_>> = vec![
            // DMARC reject first, even over good reputation; not for forwarded mail.
            (verdicts(true, pass, true, false), Some(&good), false, true, Some(550), "dmarc-policy"),
            (verdicts(true, pass, true, false), Some(&good), true, true, None, "msgfromfull"),
            // Conclusive reputation decides before DNSBL and SPF.
            (verdicts(false, fail, false, true), Some(&good), false, false, None, "msgfromfull"),
            (verdicts(false, pass, true, false), Some(&bad), false, true, Some(451), "msgfromfull"),
            // Weak reputation: SPF fail refuses; a junk signal with bad iprev refuses.
            (verdicts(false, fail, true, false), Some(&none), false, true, Some(451), "spf-policy"),
            (verdicts(false, SpfStatus::Softfail, true, false), Some(&none), false, true, Some(451), "spf-policy"),
            (verdicts(false, pass, false, false), Some(&weak_junk), false, true, Some(451), "iprev"),
            (verdicts(false, pass, true, false), Some(&weak_junk), false, true, None, "no-bad-signals"),
            // DNSBL, then iprev for first-time senders.
            (verdicts(false, pass, true, true), Some(&none), false, true, Some(451), "dns-blocklisted"),
            (verdicts(false, pass, false, false), Some(&none), false, false, Some(451), "iprev"),
            (verdicts(false, pass, false, false), Some(&none), false, true, None, "no-bad-signals"),
            // Without reputation: the old rules.
            (verdicts(false, fail, true, false), None, false, true, None, "no-bad-signals"),
            (verdicts(false, pass, true, true), None, false, true, Some(451), "dns-blocklisted"),
        ];
        for (i, (v, r, fwd, known, code, reason)) in cases.into_iter().enumerate() {
            let d = policy.analyze(&v, r, fwd, known);
            assert_eq!(
                (d.verdict.as_ref().err().map(|r| r.code), d.reason),
                (code, reason),
                "case {i}: {:?}",
                d.text
            );
        }
    }

    /// The junk filter's place and thresholds (mox's analysis): after conclusive
    /// reputation, before the DNSBL; stricter for bad iprev, plain text and a recipient not
    /// in To/Cc; not significant only refuses with bad iprev; subjectpass for moderate junk.
    #[test]
    fn content_rules() {
        let policy = IncomingPolicy::default();
        let good = rep(Some(false), true, Method::MsgFromFull);
        let none = rep(None, false, Method::None);
        let c = |p: f64, significant: bool, tls: bool, in_to: bool| ContentCheck {
            probability: p,
            significant,
            threshold: 0.95,
            tls,
            recipient_in_to_cc: in_to,
            words: "ham words: ; spam words: ".into(),
        };
        let pass = SpfStatus::Pass;
        type Case<'a> = (
            Verdicts,
            &'a Outcome,
            bool,
            ContentCheck,
            Option<u16>,
            &'a str,
        );
        #[rustfmt::skip]
        let cases: Vec<Case<'_>> = vec![
            // Conclusive reputation: the content is not even looked at.
            (verdicts(false, pass, true, false), &good, false, c(0.99, true, true, true), None, "msgfromfull"),
            // Above the threshold: 451; at or under: on to the DNSBL.
            (verdicts(false, pass, true, false), &none, false, c(0.96, true, true, true), Some(451), "junk-content"),
            (verdicts(false, pass, true, false), &none, false, c(0.95, true, true, true), None, "no-bad-signals"),
            (verdicts(false, pass, true, true), &none, false, c(0.10, true, true, true), Some(451), "dns-blocklisted"),
            // Stricter (0.25) without TLS, with bad iprev, with the recipient not in To/Cc.
            (verdicts(false, pass, true, false), &none, false, c(0.30, true, false, true), Some(451), "junk-content-strict"),
            (verdicts(false, pass, false, false), &none, false, c(0.30, true, true, true), Some(451), "junk-content-strict"),
            (verdicts(false, pass, true, false), &none, false, c(0.30, true, true, false), Some(451), "junk-content-strict"),
            (verdicts(false, pass, true, false), &none, false, c(0.20, true, false, false), None, "no-bad-signals"),
            // Forwarded mail does not name the recipient: not stricter for that.
            (verdicts(false, pass, true, false), &none, true, c(0.30, true, true, false), None, "no-bad-signals"),
            // Not significant: accepted, unless iprev is bad too.
            (verdicts(false, pass, true, false), &none, false, c(0.99, false, true, true), None, "no-bad-signals"),
            (verdicts(false, pass, false, false), &none, false, c(0.99, false, true, true), Some(451), "junk-content-strict"),
        ];
        for (i, (v, r, fwd, content, code, reason)) in cases.into_iter().enumerate() {
            let d = policy.analyze_all(&v, Some(r), fwd, true, None, Some(&content));
            assert_eq!(
                (d.verdict.as_ref().err().map(|r| r.code), d.reason),
                (code, reason),
                "case {i}: {:?}",
                d.text
            );
        }
        // The reason text shows the score, the threshold and why it was stricter.
        let d = policy.analyze_all(
            &verdicts(false, pass, true, false),
            Some(&none),
            false,
            true,
            None,
            Some(&c(0.3, true, false, true)),
        );
        assert!(
            d.text.iter().any(|t| t
                == "content: junk, spamscore 0.30, threshold 0.25 (stricter: no tls); ham words: ; spam words: "),
            "{:?}",
            d.text
        );
        // A DNSBL-listed sender without history with a DMARC pass whose content is fine
        // gets a subjectpass; junk content does not.
        let key = b"0123456789abcdef";
        let p = PassCheck {
            key,
            period_secs: 3600,
            now: crate::time::UnixTime(1_000_000),
            from: Some("a@example.org"),
            subject: Some("hello"),
        };
        let mut v = verdicts(false, pass, true, true);
        v.dmarc = Some(DmarcResult {
            status: DmarcStatus::Pass,
            disposition: Policy::None,
            requested: Policy::None,
            policy_domain: "example.org".into(),
            record: None,
            dkim_aligned: true,
            spf_aligned: false,
            testing: false,
            error: None,
        });
        let d = policy.analyze_all(
            &v,
            Some(&none),
            false,
            true,
            Some(&p),
            Some(&c(0.5, true, true, true)),
        );
        assert_eq!(
            (d.verdict.as_ref().err().map(|r| r.code), d.reason),
            (Some(550), "give-subjectpass")
        );
        let d = policy.analyze_all(
            &v,
            Some(&none),
            false,
            true,
            Some(&p),
            Some(&c(0.99, true, true, true)),
        );
        assert_eq!(
            (d.verdict.as_ref().err().map(|r| r.code), d.reason),
            (Some(451), "junk-content")
        );
    }

    #[test]
    fn first_time_delay_table() {
        use crate::time::UnixTime;
        assert_eq!(
            first_time_delay(UnixTime(100), UnixTime(100), 300)
                .unwrap_err()
                .to_string(),
            "451 4.7.1 first-time sender: try again in 300 seconds"
        );
        assert!(first_time_delay(UnixTime(100), UnixTime(399), 300).is_err());
        assert!(first_time_delay(UnixTime(100), UnixTime(400), 300).is_ok());
        assert!(first_time_delay(UnixTime(100), UnixTime(100), 0).is_ok());
    }

    /// The junk refusal says nothing a spammer could tune against; the header records why.
    #[test]
    fn junk_reply_and_header() {
        let d = IncomingPolicy::default().analyze(
            &verdicts(false, SpfStatus::Pass, true, false),
            Some(&rep(Some(true), true, Method::Ip1)),
            false,
            true,
        );
        assert_eq!(
            d.verdict.unwrap_err().to_string(),
            "451 4.3.0 error processing, try again later"
        );
        let d = IncomingPolicy::default().analyze(
            &verdicts(false, SpfStatus::Pass, true, false),
            Some(&Outcome {
                reason: "evil\r\nInjected: yes".into(),
                ..rep(Some(false), true, Method::MsgToFull)
            }),
            false,
            true,
        );
        assert_eq!(
            d.header(),
            "X-Rmox-Reason: msgtofull;\r\n\treputation: not junk, conclusive: evilInjected: yes\r\n"
        );
    }
}
