//! The systemd readiness protocol (sd_notify): `READY=1` once the listeners accept,
//! `STOPPING=1` when a graceful stop begins, sent as one datagram to `$NOTIFY_SOCKET` (a
//! path, or `@name` for the abstract namespace on Linux). Without the variable nothing is
//! sent; a failure to send is logged, never fatal.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (`READY=1`, `STOPPING=1`, ...) to the service manager, if any.
pub fn notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let target = target.to_string_lossy().into_owned();
    let r = UnixDatagram::unbound().and_then(|s| send(&s, &target, state.as_bytes()));
    match r {
        Ok(()) => tracing::debug!(state, "sd_notify"),
        Err(e) => tracing::warn!(error = %e, socket = %target, state, "sd_notify failed"),
    }
}

fn send(s: &UnixDatagram, target: &str, msg: &[u8]) -> std::io::Result<()> {
    if let Some(name) = target.strip_prefix('@') {
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            return s.send_to_addr(msg, &addr).map(|_| ());
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = name;
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "abstract socket names are Linux-only",
            ));
        }
    }
    s.send_to(msg, target).map(|_| ())
}
