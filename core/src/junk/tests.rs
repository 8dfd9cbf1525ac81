use super::*;
use proptest::prelude::*;

fn toks(m: &str) -> BTreeSet<String> {
    tokenize(&Params::default(), m.as_bytes())
}

/// Header words carry the header's name; body words and pairs do not; short, numeric and
/// random-looking words are left out.
#[test]
fn tokens_of_a_plain_message() {
    let t = toks(
        "From: Cheap Pharmacy <sales@pharmacy.example>\r\n\
         To: bob@example.org\r\n\
         Subject: Buy cheap pills now\r\n\
         \r\n\
         Order today, it's the best offer. Code 12345 xkcdqwrtz abc a1\r\n",
    );
    for want in [
        "from:cheap",
        "from:pharmacy",
        "from:sales",
        "subject:cheap",
        "subject:pills",
        "order",
        "today",
        "it's",
        "the best",
        "best offer",
        "offer",
        "abc",
    ] {
        assert!(t.contains(want), "missing {want:?} in {t:?}");
    }
    for not in [
        "subject:now", // 3 letters: too short for a header word
        "12345",       // digits
        "code 12345",
        "xkcdqwrtz", // random-looking
        "a1",        // too short
        "to:bob",    // too short
    ] {
        assert!(!t.contains(not), "unexpected {not:?} in {t:?}");
    }
}

/// HTML: text without tags, nothing from scripts and styles, the hosts of links; attachment
/// names and types.
#[test]
fn tokens_of_html_and_attachments() {
    let m = "From: a@b.example\r\n\
             Subject: invoice\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=XX\r\n\
             \r\n\
             --XX\r\n\
             Content-Type: text/html\r\n\
             \r\n\
             <html><head><style>.hidden { color: white }</style></head><body>\
             <script>var tracking = 'scriptword';</script>\
             <p>Please <b>review</b> the <a href=\"https://Evil-Host.example/pay?x=1\">payment</a></p>\
             </body></html>\r\n\
             --XX\r\n\
             Content-Type: application/octet-stream\r\n\
             Content-Disposition: attachment; filename=\"Invoice_March.PDF.exe\"\r\n\
             Content-Transfer-Encoding: base64\r\n\
             \r\n\
             AAAA\r\n\
             --XX--\r\n";
    let t = toks(m);
    for want in [
        "please",
        "review",
        "payment",
        "review the",
        "link:evil-host.example",
        "attachment:invoice",
        "attachment:march",
        "attachment:pdf",
        "attachment:exe",
        "attachment-type:exe",
        "subject:invoice",
    ] {
        assert!(t.contains(want), "missing {want:?} in {t:?}");
    }
    for not in [
        "scriptword",
        "tracking",
        "hidden",
        "color",
        "white",
        "html",
        "body",
    ] {
        assert!(!t.contains(not), "unexpected {not:?} in {t:?}");
    }
}

/// A nested message (message/rfc822) is read too; undecodable bytes do not stop anything.
#[test]
fn tokens_of_nested_and_broken_messages() {
    let m = "Subject: fwd\r\nContent-Type: message/rfc822\r\n\r\n\
             Subject: inner subject\r\n\r\nnestedword here\r\n";
    let t = toks(m);
    assert!(t.contains("nestedword"), "{t:?}");
    assert!(t.contains("subject:inner"), "{t:?}");
    let broken = b"\xff\xfe garbage \x00 bytes without headers wordone";
    let t = tokenize(&Params::default(), broken);
    assert!(t.contains("wordone"), "{t:?}");
}

/// Word pairs and single words can be switched off.
#[test]
fn grams_follow_the_params() {
    let only_pairs = Params {
        onegrams: false,
        ..Params::default()
    };
    let t = tokenize(&only_pairs, b"Subject: x\r\n\r\nalpha beta gamma\r\n");
    assert!(
        t.contains("alpha beta") && t.contains("beta gamma"),
        "{t:?}"
    );
    assert!(!t.contains("alpha"), "{t:?}");
    let only_words = Params {
        twograms: false,
        ..Params::default()
    };
    let t = tokenize(&only_words, b"Subject: x\r\n\r\nalpha beta gamma\r\n");
    assert!(t.contains("alpha") && !t.contains("alpha beta"), "{t:?}");
}

fn counts(v: &[(&str, u32, u32)]) -> Vec<(String, Counts)> {
    v.iter()
        .map(|(w, h, s)| (w.to_string(), Counts { ham: *h, spam: *s }))
        .collect()
}

/// The arithmetic on known numbers: one spam word seen in all 10 spams and no ham is
/// bounded by max_power: probability 0.99.
#[test]
fn classify_known_numbers() {
    let p = Params::default();
    let c = classify(&p, 100, 10, &counts(&[("viagra", 0, 10)]));
    assert!((c.probability - 0.99).abs() < 1e-9, "{c:?}");
    assert_eq!(c.spam.len(), 1);
    assert!(c.significant);
    // One ham and one spam word of equal strength cancel out.
    let c = classify(
        &p,
        100,
        100,
        &counts(&[("meeting", 100, 0), ("viagra", 0, 100)]),
    );
    assert!((c.probability - 0.5).abs() < 1e-9, "{c:?}");
    // A word seen in 30% of spam and 10% of ham: 0.75.
    let c = classify(&p, 100, 100, &counts(&[("offer", 10, 30)]));
    assert!((c.probability - 0.75).abs() < 1e-9, "{c:?}");
    // Rare words pull toward 0.5: seen once, r = 0.99 + 2 * (0.5 - 0.99) / 10 = 0.892.
    let c = classify(&p, 100, 100, &counts(&[("once", 0, 1)]));
    assert!((c.probability - 0.892).abs() < 1e-9, "{c:?}");
    // Neutral words are ignored; unknown words say nothing.
    let c = classify(&p, 100, 100, &counts(&[("the", 50, 50), ("new", 0, 0)]));
    assert_eq!((c.probability, c.ham.len(), c.spam.len()), (0.5, 0, 0));
    // Too little ham trained: not significant.
    assert!(!classify(&p, MIN_HAMS - 1, 100, &[]).significant);
}

/// Only the top_words strongest of each side count, whatever the order of the input.
#[test]
fn classify_uses_the_strongest_and_is_order_independent() {
    let p = Params {
        top_words: 2,
        ..Params::default()
    };
    let mut v = counts(&[
        ("a", 0, 50),
        ("b", 0, 40),
        ("c", 0, 30),
        ("d", 40, 0),
        ("e", 30, 0),
        ("f", 20, 1),
    ]);
    let c1 = classify(&p, 100, 100, &v);
    v.reverse();
    let c2 = classify(&p, 100, 100, &v);
    assert_eq!(c1, c2);
    assert_eq!(c1.spam.len(), 2);
    assert_eq!(c1.ham.len(), 2);
    assert_eq!(c1.spam[0].token, "a");
    assert!(
        c1.words(true).starts_with("ham words: d 0.010, e 0.010"),
        "{}",
        c1.words(true)
    );
}

proptest! {
    /// Any bytes tokenize without panicking, into bounded tokens.
    #[test]
    fn tokenize_never_panics(b in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let t = tokenize(&Params::default(), &b);
        prop_assert!(t.len() <= MAX_TOKENS);
        for w in &t {
            prop_assert!(w.len() <= MAX_WORD * 2 + 1 + 16, "{w:?}");
        }
    }

    /// MIME-looking input, with HTML and attachments, too.
    #[test]
    fn tokenize_mime_never_panics(
        body in "[a-zA-Z0-9 <>/=\"'.:;&#\\-\r\n]{0,400}",
        ct in prop_oneof![Just("text/html"), Just("text/plain"), Just("application/pdf"), Just("message/rfc822")],
    ) {
        let m = format!(
            "Subject: s\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: {ct}; name=\"f.x\"\r\n\r\n{body}\r\n--B--\r\n"
        );
        let _ = tokenize(&Params::default(), m.as_bytes());
    }

    /// The probability is always in [0, 1], whatever the counts.
    #[test]
    fn probability_in_range(
        hams in 0u32..1000, spams in 0u32..1000,
        v in proptest::collection::vec(("[a-z]{1,5}", 0u32..2000, 0u32..2000), 0..40),
    ) {
        let tokens: Vec<(String, Counts)> = v.into_iter().map(|(w, h, s)| (w, Counts { ham: h, spam: s })).collect();
        let c = classify(&Params::default(), hams, spams, &tokens);
        prop_assert!((0.0..=1.0).contains(&c.probability), "{c:?}");
    }
}
