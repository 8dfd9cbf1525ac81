//! `rmox config check` through the real binary: each kind of configuration error, from
//! the TOML parser, the typed transports and resolver, validation, and the helpers that
//! check what serve reads (core's queue builder, password and zone files), reaches the
//! user as one line naming the file, the key path and the value.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rmox_tests::*;

const BASE: &str = r#"hostname = "mail.mox.example"
data_dir = "data"

[domain."mox.example"]

[account.mjl]
domain = "mox.example"
destinations = { "mjl@mox.example" = {} }
"#;

/// Runs `config check` on BASE with `top` before the tables and `extra` after them; the
/// check's stderr.
fn check(dir: &TempDir, top: &str, extra: &str) -> (bool, String) {
    let cfg = dir.path().join("rmox.toml");
    std::fs::write(&cfg, format!("{top}{BASE}{extra}")).unwrap();
    let out = rmox(
        &["config", "check", "--config", cfg.to_str().unwrap()],
        None,
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Transport errors used to be found by hand after parsing (`not valid for kind`), and
/// errors of nested helpers (core's queue builder) reached the user as `queue: queue
/// backoff: interval 1 ...` without the key or value. Every kind of error is one line
/// `FILE: KEY: problem` whose key is the path of the key at fault and whose problem quotes
/// the value.
#[test]
fn config_check_errors_name_file_key_and_value() {
    let dir = TempDir::new("config-check");
    let (ok, err) = check(&dir, "", "");
    assert!(ok, "the base config is valid: {err}");
    let file = dir.path().join("rmox.toml").display().to_string();
    let t = "[transport.t]\n";
    let cases: Vec<(&str, &str, String, &str)> = vec![
        // The TOML parser: syntax and types, at their line.
        ("syntax", "", "[account\n".into(), "line 9: invalid table header"),
        (
            "type",
            "",
            "[queue]\nmax_attempts = \"x\"\n".into(),
            "line 10: invalid type: string \"x\", expected u32",
        ),
        (
            "unknown key",
            "",
            "[queue]\nbogus = 1\n".into(),
            "line 10: unknown field `bogus`",
        ),
        // The typed resolver.
        (
            "resolver value",
            "resolver = [\"localhost:53\"]\n",
            String::new(),
            "resolver: \"localhost:53\" is not ip:port (or zonefile:PATH)",
        ),
        (
            "resolver combination",
            "resolver = [\"zonefile:zone\", \"127.0.0.1:53\"]\n",
            String::new(),
            "resolver: \"zonefile:zone, 127.0.0.1:53\": zonefile:PATH answers every question",
        ),
        // The typed transports: a key of another kind, a missing key, a bad value, a value
        // in a nested table, a kind that does not exist.
        (
            "key of another kind",
            "",
            format!("{t}kind = \"direct\"\nhost = \"h.example\"\n"),
            "transport.t.host: not valid for kind = \"direct\" (expected `ipv4` or `ipv6`)",
        ),
        (
            "missing key",
            "",
            format!("{t}kind = \"socks5\"\n"),
            "transport.t.proxy: required for kind = \"socks5\"",
        ),
        (
            "transport value",
            "",
            format!("{t}kind = \"socks5\"\nproxy = \"localhost:1080\"\n"),
            "transport.t.proxy: \"localhost:1080\" is not ip:port",
        ),
        (
            "nested value",
            "",
            format!("{t}kind = \"smarthost\"\nhost = \"h.example\"\nauth = {{ username = \"u\", password = \"p\", mechanisms = [\"NTLM\"] }}\n"),
            "transport.t.auth.mechanisms: unknown mechanism \"NTLM\"",
        ),
        (
            "unknown kind",
            "",
            format!("{t}kind = \"smtp\"\n"),
            "transport.t.kind: unknown variant `smtp`",
        ),
        (
            "value type in a transport",
            "",
            format!("{t}kind = \"smarthost\"\nhost = \"h.example\"\nport = 70000\n"),
            "transport.t.port: invalid value: integer `70000`",
        ),
        // Validation after parsing.
        (
            "validation",
            "",
            "[account.x]\ndomain = \"nope.example\"\n".into(),
            "account.x.domain: domain \"nope.example\" is not configured",
        ),
        // Helpers: core's queue builder, the files serve reads.
        (
            "queue builder",
            "",
            "[queue]\nbackoff_secs = [600, 60]\n".into(),
            "queue.backoff_secs[1]: 60 is shorter than the interval before it (600)",
        ),
        (
            "password file",
            "",
            format!("{t}kind = \"submission\"\nhost = \"h.example\"\nauth = {{ username = \"u\", password_file = \"nopw\" }}\n"),
            "transport.t.auth.password_file: ",
        ),
        (
            "zone file",
            "resolver = [\"zonefile:nozone\"]\n",
            String::new(),
            "resolver: zonefile: ",
        ),
        (
            "acme ca_file",
            "",
            "[[listener]]\nname = \"l\"\nip = \"127.0.0.1\"\nmta_sts = { port = 443 }\n\
             acme = { directory_url = \"https://ca.example/dir\", ca_file = \"noca.pem\" }\n"
                .into(),
            "listener[0].acme.ca_file: ",
        ),
        (
            "acme without its challenge port",
            "",
            "[[listener]]\nname = \"l\"\nip = \"127.0.0.1\"\nsmtp = { port = 25 }\n\
             acme = { directory_url = \"https://ca.example/dir\" }\n"
                .into(),
            "listener[0].acme.challenge: tls-alpn-01 needs an implicit TLS port",
        ),
    ];
    for (what, top, extra, want) in cases {
        let (ok, err) = check(&dir, top, &extra);
        assert!(!ok, "{what}: config check passed");
        let want = format!("rmox: {file}: {want}");
        assert!(err.starts_with(&want), "{what}: want {want:?}\ngot {err}");
        assert_eq!(err.trim().lines().count(), 1, "{what}: {err}");
    }
}
