use super::*;
use proptest::prelude::*;

fn facts() -> Facts<'static> {
    Facts {
        from: "Alice Example alice@example.org",
        to: "Bob bob@localhost carol@localhost",
        subject: "Your invoice 42",
        text: "Please find the invoice attached. Thanks!",
        read: false,
        attachments: 1,
    }
}

/// Table: query -> matches the message above.
#[test]
fn queries() {
    let cases = [
        ("", true),
        ("invoice", true),
        ("INVOICE thanks", true),
        ("invoice missing", false),
        ("from:alice", true),
        ("from:bob", false),
        ("to:carol@localhost", true),
        ("to:alice", false),
        ("subject:\"invoice 42\"", true),
        ("subject:\"invoice 43\"", false),
        ("\"find the invoice\"", true),
        ("is:unread", true),
        ("is:read", false),
        ("has:attachment", true),
        ("-has:attachment", false),
        ("!from:bob invoice", true),
        ("-invoice", false),
        ("other:thing", false),
        ("-", false),
    ];
    for (q, want) in cases {
        assert_eq!(Query::parse(q).matches(&facts()), want, "{q:?}");
    }
    assert!(Query::parse("  ").is_empty());
}

proptest! {
    /// Any query parses, and a query and its negation never both match one word.
    #[test]
    fn parse_never_panics(q in "\\PC{0,60}") {
        let _ = Query::parse(&q).matches(&facts());
    }

    #[test]
    fn negation(w in "[a-z]{1,8}") {
        let f = facts();
        let pos = Query::parse(&w).matches(&f);
        let neg = Query::parse(&format!("-{w}")).matches(&f);
        prop_assert_ne!(pos, neg);
    }
}
