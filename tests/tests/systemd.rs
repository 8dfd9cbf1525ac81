//! Running under systemd (issue 16): `rmox serve` tells the service manager READY=1 once
//! its ports accept and STOPPING=1 when a graceful stop begins (sd_notify, to a datagram
//! socket the test binds as systemd would), on every runtime; and the unit file in
//! contrib/ passes `systemd-analyze verify`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use rmox_tests::*;

const SMTP: u16 = 2525;

fn ready_then_stopping(rt: &str) {
    let dir = TempDir::new(&format!("notify-{rt}"));
    let ip = unique_ip();
    std::fs::write(
        dir.path().join("rmox.toml"),
        format!(
            "hostname = \"mail.mox.example\"\ndata_dir = \"data\"\n\n[[listener]]\nname = \"t\"\nip = \"{ip}\"\nsmtp = {{ port = {SMTP} }}\n\n[domain.\"mox.example\"]\n"
        ),
    )
    .unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut child = Command::new(rmox_bin())
        .args([
            "serve",
            "--config",
            dir.path().join("rmox.toml").to_str().unwrap(),
            "--runtime",
            rt,
        ])
        .env("NOTIFY_SOCKET", &sock_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("READY=1 within 30 s");
    assert_eq!(&buf[..n], b"READY=1");
    // Ready means the port accepts.
    let addr = SocketAddr::from((ip, SMTP));
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(5)).is_ok());
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let n = sock.recv(&mut buf).expect("STOPPING=1 within 30 s");
    assert_eq!(&buf[..n], b"STOPPING=1");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("rmox did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// contrib/rmox.service is a valid unit (its ExecStart pointed at the built binary).
#[test]
fn unit_file_verifies() {
    let Ok(analyze) = which("systemd-analyze") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing but CI is set (Debian package systemd)"
        );
        eprintln!("SKIP: systemd-analyze not installed; CI is not set");
        return;
    };
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/rmox.service"),
    )
    .unwrap();
    let dir = TempDir::new("unit");
    let path = dir.path().join("rmox.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/rmox", rmox_bin().to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|f| f.is_file())
        })
        .ok_or(())
}

on_every_runtime!(ready_then_stopping);
