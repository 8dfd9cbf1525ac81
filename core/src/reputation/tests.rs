//! The analysis against an in-memory history: which questions it asks, in which order, and
//! what it concludes (mox's scenarios for each kind of evidence).

use super::*;
use proptest::prelude::*;

const NOW: UnixTime = UnixTime(2_000_000_000);
const DAY: i64 = 24 * 3600;

/// One earlier message of the account.
#[derive(Clone, Default)]
struct Msg {
    from: Option<(&'static str, &'static str, &'static str)>,
    from_validated: bool,
    dkim: Vec<&'static str>,
    mail_from: Option<&'static str>,
    ehlo: Option<&'static str>,
    networks: Vec<&'static str>,
    junk: bool,
    age_days: i64,
}

#[derive(Default)]
struct History {
    msgs: Vec<Msg>,
    sent: Vec<(&'static str, i64)>,
}

impl History {
    fn answer(&self, q: &Query) -> Answer {
        match q {
            Query::Messages {
                key,
                since,
                limit,
                from_validated,
            } => {
                let mut v: Vec<&Msg> = self
                    .msgs
                    .iter()
                    .filter(|m| NOW.0 - m.age_days * DAY >= since.0)
                    .filter(|m| from_validated.is_none_or(|fv| m.from_validated == fv))
                    .filter(|m| match key {
                        Key::FromAddress(a) => {
                            m.from.is_some_and(|(lp, d, _)| format!("{lp}@{d}") == *a)
                        }
                        Key::FromDomain(d) => m.from.is_some_and(|(_, fd, _)| fd == d),
                        Key::FromOrgDomain(d) => m.from.is_some_and(|(_, _, o)| o == d),
                        Key::DkimDomain(d) => m.dkim.contains(&d.as_str()),
                        Key::MailFrom(a) => m.mail_from == Some(a.as_str()),
                        Key::MailFromDomain(d) => m
                            .mail_from
                            .is_some_and(|a| a.rsplit_once('@').is_some_and(|(_, md)| md == d)),
                        Key::Ehlo(e) => m.ehlo == Some(e.as_str()),
                        Key::Network(n) => m.networks.contains(&n.as_str()),
                    })
                    .collect();
                v.sort_by_key(|m| m.age_days);
                v.truncate(*limit);
                Answer::Messages(
                    v.iter()
                        .map(|m| Hit {
                            junk: m.junk,
                            from_localpart: m.from.map(|f| f.0.to_string()),
                        })
                        .collect(),
                )
            }
            Query::SentTo { key, since } => Answer::SentTo(self.sent.iter().any(|(a, age)| {
                NOW.0 - age * DAY >= since.0
                    && match key {
                        SentKey::Address(x) => a == x,
                        SentKey::Domain(d) => a.rsplit_once('@').is_some_and(|(_, ad)| ad == d),
                        SentKey::Within(d) => a
                            .rsplit_once('@')
                            .is_some_and(|(_, ad)| ad == d || ad.ends_with(&format!(".{d}"))),
                    }
            })),
        }
    }
}

/// Runs the analysis: the questions asked and the outcome.
fn run(facts: Facts, h: &History) -> (Vec<Query>, Outcome) {
    let mut r = Reputation::new(facts, NOW);
    let mut asked = Vec::new();
    for _ in 0..100 {
        match r.poll() {
            Step::Ask(q) => {
                let a = h.answer(&q);
                asked.push(q);
                r.handle(a);
            }
            Step::Done(o) => return (asked, o),
        }
    }
    panic!("no outcome after 100 questions: {asked:?}");
}

fn facts(validated: bool) -> Facts {
    Facts {
        from: Some(FromFacts {
            localpart: "remote".into(),
            domain: "mail.example.org".into(),
            org_domain: "example.org".into(),
            validated,
        }),
        mail_from: Some("remote@mail.example.org".into()),
        mail_from_domain: Some("mail.example.org".into()),
        mail_from_validated: true,
        ehlo: Some("mx.example.org".into()),
        ehlo_validated: false,
        dkim_domains: vec!["example.org".into()],
        networks: vec![
            "192.0.2.10/32".into(),
            "192.0.2.0/26".into(),
            "192.0.0.0/21".into(),
        ],
        ipv6: false,
    }
}

fn from_msg(lp: &'static str, junk: bool) -> Msg {
    Msg {
        from: Some((lp, "mail.example.org", "example.org")),
        from_validated: true,
        junk,
        age_days: 1,
        ..Msg::default()
    }
}

fn summary(o: &Outcome) -> (Option<bool>, bool, &'static str) {
    (o.junk, o.conclusive, o.method.as_str())
}

#[test]
fn no_history_asks_everything_once_and_has_no_opinion() {
    let (asked, o) = run(facts(true), &History::default());
    assert_eq!(summary(&o), (None, false, "none"));
    let kinds: Vec<String> = asked
        .iter()
        .map(|q| match q {
            Query::Messages { key, limit, .. } => format!("{key:?}/{limit}"),
            Query::SentTo { key, .. } => format!("sent {key:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            "FromAddress(\"remote@mail.example.org\")/2",
            "sent Address(\"remote@mail.example.org\")",
            "FromDomain(\"mail.example.org\")/20",
            "sent Domain(\"mail.example.org\")",
            "FromOrgDomain(\"example.org\")/20",
            "sent Within(\"example.org\")",
            "DkimDomain(\"example.org\")/50",
            "MailFrom(\"remote@mail.example.org\")/50",
            "MailFromDomain(\"mail.example.org\")/50",
            "Network(\"192.0.2.10/32\")/50",
            "Network(\"192.0.2.0/26\")/50",
            "Network(\"192.0.0.0/21\")/50",
        ]
    );
}

#[test]
fn exact_from_address_decides_first() {
    let h = History {
        msgs: vec![from_msg("remote", false)],
        ..History::default()
    };
    let (asked, o) = run(facts(true), &h);
    assert_eq!(asked.len(), 1);
    assert_eq!(summary(&o), (Some(false), true, "msgfromfull"));
    // Two junk messages: junk, conclusive; one junk after a good one: not junk.
    let mut h = History {
        msgs: vec![from_msg("remote", true), from_msg("remote", true)],
        ..History::default()
    };
    assert_eq!(
        summary(&run(facts(true), &h).1),
        (Some(true), true, "msgfromfull")
    );
    let mut newest_junk = from_msg("remote", true);
    newest_junk.age_days = 0;
    h.msgs = vec![newest_junk, from_msg("remote", false)];
    assert_eq!(
        summary(&run(facts(true), &h).1),
        (Some(false), true, "msgfromfull")
    );
}

/// An unvalidated From is judged apart from validated history: history of the same
/// validation is inconclusive; validated history means a likely forgery.
#[test]
fn unvalidated_from_address() {
    let mut unvalidated = from_msg("remote", false);
    unvalidated.from_validated = false;
    let h = History {
        msgs: vec![unvalidated],
        ..History::default()
    };
    assert_eq!(
        summary(&run(facts(false), &h).1),
        (Some(false), false, "msgfromfull")
    );
    let h = History {
        msgs: vec![from_msg("remote", true), from_msg("remote", true)],
        ..History::default()
    };
    let (asked, o) = run(facts(false), &h);
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert_eq!(summary(&o), (Some(true), true, "msgfromfull"));
}

#[test]
fn sent_to_the_sender_accepts() {
    let h = History {
        sent: vec![("remote@mail.example.org", 10)],
        ..History::default()
    };
    assert_eq!(
        summary(&run(facts(true), &h).1),
        (Some(false), true, "msgtofull")
    );
    let h = History {
        sent: vec![("other@mail.example.org", 10)],
        ..History::default()
    };
    assert_eq!(
        summary(&run(facts(true), &h).1),
        (Some(false), true, "msgtodomain")
    );
    let h = History {
        sent: vec![("other@www.example.org", 10)],
        ..History::default()
    };
    assert_eq!(
        summary(&run(facts(true), &h).1),
        (Some(false), true, "msgtoorgdomain")
    );
    // Longer ago than the window: no evidence.
    let h = History {
        sent: vec![("remote@mail.example.org", 4 * 365)],
        ..History::default()
    };
    assert_eq!(summary(&run(facts(true), &h).1), (None, false, "none"));
}

#[test]
fn from_domain_reputation() {
    let good: Vec<Msg> = (0..5).map(|_| from_msg("colleague", false)).collect();
    let h = History {
        msgs: good,
        ..History::default()
    };
    assert_eq!(
        summary(&run(facts(true), &h).1),
        (Some(false), true, "msgfromdomain")
    );
    // All junk from three addresses: conclusive; from one: not.
    let h = History {
        msgs: vec![
            from_msg("a", true),
            from_msg("b", true),
            from_msg("c", true),
        ],
        ..History::default()
    };
    assert_eq!(
        summary(&run(facts(true), &h).1),
        (Some(true), true, "msgfromdomain")
    );
    let h = History {
        msgs: vec![from_msg("a", true), from_msg("a", true)],
        ..History::default()
    };
    assert_eq!(
        summary(&run(facts(true), &h).1),
        (Some(true), false, "msgfromdomain")
    );
    // Mixed: no opinion, so a new sender at the domain is not blocked.
    let h = History {
        msgs: vec![from_msg("a", true), from_msg("b", false)],
        ..History::default()
    };
    assert_eq!(
        summary(&run(facts(true), &h).1),
        (None, false, "msgfromdomain")
    );
    // The organisational domain when the exact domain has no history.
    let mut m = from_msg("a", false);
    m.from = Some(("a", "www.example.org", "example.org"));
    let h = History {
        msgs: vec![m],
        ..History::default()
    };
    assert_eq!(
        summary(&run(facts(true), &h).1),
        (Some(false), true, "msgfromorgdomain")
    );
}

fn dkim_msg(junk: bool) -> Msg {
    Msg {
        dkim: vec!["example.org"],
        junk,
        age_days: 3,
        ..Msg::default()
    }
}

#[test]
fn dkim_and_spf_reputation() {
    let h = History {
        msgs: (0..10).map(|_| dkim_msg(false)).collect(),
        ..History::default()
    };
    let (asked, o) = run(facts(true), &h);
    assert_eq!(summary(&o), (Some(false), true, "dkimspf"));
    // The MAIL FROM questions were asked too: all signals are gathered before deciding.
    assert!(asked.iter().any(|q| matches!(
        q,
        Query::Messages {
            key: Key::MailFrom(_),
            ..
        }
    )));
    let h = History {
        msgs: (0..3).map(|_| dkim_msg(true)).collect(),
        ..History::default()
    };
    assert_eq!(
        summary(&run(facts(true), &h).1),
        (Some(true), true, "dkimspf")
    );
    // One junk message only: junk, not conclusive.
    let h = History {
        msgs: vec![dkim_msg(true)],
        ..History::default()
    };
    assert_eq!(
        summary(&run(facts(true), &h).1),
        (Some(true), false, "dkimspf")
    );
    // Good DKIM domain, bad SPF domain: mixed.
    let mut spf_bad = dkim_msg(true);
    spf_bad.dkim = vec![];
    spf_bad.mail_from = Some("remote@mail.example.org");
    let h = History {
        msgs: vec![dkim_msg(false), spf_bad],
        ..History::default()
    };
    assert_eq!(summary(&run(facts(true), &h).1), (None, false, "dkimspf"));
    // SPF not verified: the MAIL FROM history is not asked for.
    let mut f = facts(true);
    f.mail_from_validated = false;
    let (asked, _) = run(f, &History::default());
    assert!(!asked.iter().any(|q| matches!(
        q,
        Query::Messages {
            key: Key::MailFrom(_) | Key::MailFromDomain(_),
            ..
        }
    )));
}

#[test]
fn verified_ehlo_counts_when_mail_from_has_no_history() {
    let mut f = facts(true);
    f.ehlo_validated = true;
    let h = History {
        msgs: (0..4)
            .map(|_| Msg {
                ehlo: Some("mx.example.org"),
                age_days: 2,
                ..Msg::default()
            })
            .collect(),
        ..History::default()
    };
    assert_eq!(summary(&run(f, &h).1), (Some(false), true, "dkimspf"));
}

fn ip_msg(net: &'static str, junk: bool) -> Msg {
    Msg {
        networks: vec![net],
        junk,
        age_days: 5,
        ..Msg::default()
    }
}

#[test]
fn ip_reputation_needs_more_messages_for_wider_nets() {
    let h = History {
        msgs: vec![ip_msg("192.0.2.10/32", true), ip_msg("192.0.2.10/32", true)],
        ..History::default()
    };
    assert_eq!(summary(&run(facts(true), &h).1), (Some(true), true, "ip1"));
    let h = History {
        msgs: vec![ip_msg("192.0.2.0/26", true), ip_msg("192.0.2.0/26", true)],
        ..History::default()
    };
    assert_eq!(summary(&run(facts(true), &h).1), (Some(true), false, "ip2"));
    let h = History {
        msgs: (0..5).map(|_| ip_msg("192.0.2.0/26", false)).collect(),
        ..History::default()
    };
    let (_, o) = run(facts(true), &h);
    assert_eq!(summary(&o), (Some(false), true, "ip2"));
    assert!(o.reason.contains("192.0.2.0/26"), "{}", o.reason);
    let h = History {
        msgs: (0..10).map(|i| ip_msg("192.0.0.0/21", i < 4)).collect(),
        ..History::default()
    };
    assert_eq!(summary(&run(facts(true), &h).1), (None, false, "ip3"));
    // Too old for the IP window (a quarter year).
    let mut old = ip_msg("192.0.2.10/32", true);
    old.age_days = 100;
    let h = History {
        msgs: vec![old.clone(), old],
        ..History::default()
    };
    assert_eq!(summary(&run(facts(true), &h).1), (None, false, "none"));
}

/// TestForward: a forwarded message's caller leaves out the forwarder's IP, EHLO and MAIL
/// FROM; the forwarder's junk history then does not count against it.
#[test]
fn forwarded_message_is_not_judged_by_the_forwarder() {
    let h = History {
        msgs: (0..10).map(|_| ip_msg("192.0.2.10/32", true)).collect(),
        ..History::default()
    };
    let mut f = facts(true);
    assert_eq!(summary(&run(f.clone(), &h).1), (Some(true), true, "ip1"));
    f.networks.clear();
    f.ehlo = None;
    f.mail_from_domain = None;
    f.mail_from_validated = false;
    assert_eq!(summary(&run(f, &h).1), (None, false, "none"));
}

#[test]
fn without_from_header_starts_at_dkim() {
    let mut f = facts(true);
    f.from = None;
    let (asked, o) = run(f, &History::default());
    assert!(matches!(
        asked.first(),
        Some(Query::Messages {
            key: Key::DkimDomain(_),
            ..
        })
    ));
    assert_eq!(o.method, Method::None);
}

fn arb_answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        any::<bool>().prop_map(Answer::SentTo),
        proptest::collection::vec((any::<bool>(), proptest::option::of("[a-c]")), 0..30).prop_map(
            |v| Answer::Messages(
                v.into_iter()
                    .map(|(junk, from_localpart)| Hit {
                        junk,
                        from_localpart
                    })
                    .collect()
            )
        ),
    ]
}

proptest! {
    /// Whatever the answers (even of the wrong kind), the analysis ends within a bounded
    /// number of questions, and a conclusive outcome always has an opinion.
    #[test]
    fn always_ends(answers in proptest::collection::vec(arb_answer(), 0..40), validated: bool, dkim in 0usize..4, nets in 0usize..4) {
        let mut f = facts(validated);
        f.dkim_domains = (0..dkim).map(|i| format!("d{i}.example")).collect();
        f.networks.truncate(nets);
        let mut r = Reputation::new(f, NOW);
        let mut answers = answers.into_iter();
        let mut n = 0;
        let outcome = loop {
            match r.poll() {
                Step::Done(o) => break o,
                Step::Ask(_) => {
                    n += 1;
                    prop_assert!(n <= 20, "too many questions");
                    r.handle(answers.next().unwrap_or(Answer::Messages(Vec::new())));
                }
            }
        };
        prop_assert!(!outcome.conclusive || outcome.junk.is_some());
    }
}
