use super::*;

#[test]
fn codes() {
    assert_eq!(smtp_codes("550 5.1.1 no such user"), (550, "5.1.1".into()));
    assert_eq!(smtp_codes("451 try later"), (451, String::new()));
    assert_eq!(smtp_codes("connection refused"), (0, String::new()));
    assert_eq!(smtp_codes("999 9.9.9 x"), (0, String::new()));
    assert_eq!(smtp_codes(""), (0, String::new()));
}

#[test]
fn retries() {
    assert_eq!(retry_after(0, RETRY_INTERVALS), None);
    assert_eq!(retry_after(1, RETRY_INTERVALS), Some(60));
    assert_eq!(retry_after(11, RETRY_INTERVALS), Some(57600));
    assert_eq!(retry_after(12, RETRY_INTERVALS), None);
    assert_eq!(retry_after(1, &[]), None);
}

/// The HMAC-SHA256 of "UNIX." and the body, as Python's hmac module computes it:
/// `hmac.new(b"secret", b'1700000000.{"a":1}', "sha256").hexdigest()`.
#[test]
fn signature_is_hmac_sha256() {
    let s = signature(b"secret", 1_700_000_000, b"{\"a\":1}");
    assert_eq!(
        s,
        "t=1700000000,v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
    );
    assert_ne!(s, signature(b"other", 1_700_000_000, b"{\"a\":1}"));
    assert_ne!(s, signature(b"secret", 1_700_000_001, b"{\"a\":1}"));
}

#[test]
fn outgoing_shape() {
    let o = Outgoing {
        event: Event::Delivered.as_str().into(),
        queue_msg_id: 7,
        ..Default::default()
    };
    let v: serde_json::Value = serde_json::to_value(&o).unwrap();
    for k in [
        "Version",
        "Event",
        "DSN",
        "Suppressing",
        "QueueMsgID",
        "FromID",
        "MessageID",
        "Subject",
        "WebhookQueued",
        "SMTPCode",
        "SMTPEnhancedCode",
        "Error",
        "Extra",
    ] {
        assert!(v.get(k).is_some(), "{k} missing: {v}");
    }
    assert_eq!(v["Event"], "delivered");
    assert!(accepted(204) && !accepted(301) && !accepted(500));
}
