//! A small blocking SOCKS5 client (RFC 1928) for outgoing SMTP connections: no
//! authentication or user name/password (RFC 1929), CONNECT to an IP address only (the MX
//! hosts are resolved by us, so the proxy never sees a name to resolve).

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// Why a SOCKS5 connection could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Socks5Error {
    /// Connecting to the proxy, or reading from/writing to it, failed.
    #[error("proxy i/o: {0}")]
    Io(#[from] io::Error),
    /// The proxy answered with something that is not SOCKS5.
    #[error("proxy protocol error: {0}")]
    Protocol(&'static str),
    /// The proxy accepts none of the authentication methods we offered.
    #[error("proxy accepts none of our authentication methods")]
    NoMethod,
    /// The proxy refused our user name and password.
    #[error("proxy refused our user name and password")]
    AuthFailed,
    /// The proxy could not make the connection (the reply code's meaning).
    #[error("proxy could not connect: {0}")]
    Refused(&'static str),
}

/// The meaning of a CONNECT reply code (RFC 1928 section 6).
pub fn reply_text(code: u8) -> &'static str {
    match code {
        0 => "succeeded",
        1 => "general SOCKS server failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unknown error",
    }
}

fn read_exact<S: Read>(s: &mut S, buf: &mut [u8]) -> Result<(), Socks5Error> {
    s.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Socks5Error::Protocol("proxy closed the connection")
        } else {
            Socks5Error::Io(e)
        }
    })
}

/// Runs the SOCKS5 handshake on `s` (connected to the proxy): method negotiation, optional
/// user name/password authentication, CONNECT to `target`. On success `s` carries the
/// connection to `target`.
pub fn handshake<S: Read + Write>(
    s: &mut S,
    auth: Option<(&str, &str)>,
    target: SocketAddr,
) -> Result<(), Socks5Error> {
    // Method selection: 0 no authentication, 2 user name/password.
    let greeting: &[u8] = if auth.is_some() {
        &[5, 2, 0, 2]
    } else {
        &[5, 1, 0]
    };
    s.write_all(greeting)?;
    let mut r = [0u8; 2];
    read_exact(s, &mut r)?;
    if r[0] != 5 {
        return Err(Socks5Error::Protocol("not a SOCKS5 proxy"));
    }
    match (r[1], auth) {
        (0, _) => {}
        (2, Some((user, pass))) => {
            let (u, p) = (user.as_bytes(), pass.as_bytes());
            let (Ok(ul), Ok(pl)) = (u8::try_from(u.len()), u8::try_from(p.len())) else {
                return Err(Socks5Error::Protocol(
                    "user name or password longer than 255",
                ));
            };
            let mut m = Vec::with_capacity(3 + u.len() + p.len());
            m.push(1);
            m.push(ul);
            m.extend_from_slice(u);
            m.push(pl);
            m.extend_from_slice(p);
            s.write_all(&m)?;
            read_exact(s, &mut r)?;
            if r[1] != 0 {
                return Err(Socks5Error::AuthFailed);
            }
        }
        (0xff, _) => return Err(Socks5Error::NoMethod),
        _ => {
            return Err(Socks5Error::Protocol(
                "proxy chose a method we did not offer",
            ))
        }
    }
    let mut req = vec![5, 1, 0];
    match target.ip() {
        IpAddr::V4(ip) => {
            req.push(1);
            req.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            req.push(4);
            req.extend_from_slice(&ip.octets());
        }
    }
    req.extend_from_slice(&target.port().to_be_bytes());
    s.write_all(&req)?;
    let mut head = [0u8; 4];
    read_exact(s, &mut head)?;
    if head[0] != 5 {
        return Err(Socks5Error::Protocol("bad reply version"));
    }
    if head[1] != 0 {
        return Err(Socks5Error::Refused(reply_text(head[1])));
    }
    // The bound address: skip it.
    let skip = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut l = [0u8; 1];
            read_exact(s, &mut l)?;
            usize::from(l[0]) + 2
        }
        _ => return Err(Socks5Error::Protocol("bad address type in reply")),
    };
    let mut rest = vec![0u8; skip];
    read_exact(s, &mut rest)?;
    Ok(())
}

/// Connects to `target` through the proxy at `proxy`; `timeout` bounds the TCP connect and
/// each read and write of the handshake.
pub fn connect(
    proxy: SocketAddr,
    auth: Option<(&str, &str)>,
    target: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, Socks5Error> {
    let mut s = TcpStream::connect_timeout(&proxy, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    handshake(&mut s, auth, target)?;
    s.set_read_timeout(None)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted proxy: reads come from `input`, writes are recorded.
    struct Script {
        input: io::Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Script {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Script {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn run(
        input: &[u8],
        auth: Option<(&str, &str)>,
        target: &str,
    ) -> (Result<(), Socks5Error>, Vec<u8>) {
        let mut s = Script {
            input: io::Cursor::new(input.to_vec()),
            output: Vec::new(),
        };
        let r = handshake(&mut s, auth, target.parse().unwrap());
        (r, s.output)
    }

    #[test]
    fn handshakes() {
        let ok4 = [5, 0, 0, 1, 10, 0, 0, 1, 0, 25];
        let (r, out) = run(&[&[5, 0][..], &ok4].concat(), None, "192.0.2.1:25");
        r.unwrap();
        assert_eq!(out, [5, 1, 0, 5, 1, 0, 1, 192, 0, 2, 1, 0, 25]);
        // IPv6 target, domain-name bound address in the reply.
        let reply = [&[5, 0, 5, 0, 0, 3, 3][..], b"abc", &[0, 25]].concat();
        let (r, out) = run(&reply, None, "[2001:db8::1]:2525");
        r.unwrap();
        let mut want = vec![5, 1, 0, 5, 1, 0, 4, 0x20, 0x01, 0x0d, 0xb8];
        want.extend_from_slice(&[0; 11]);
        want.push(1);
        want.extend_from_slice(&2525u16.to_be_bytes());
        assert_eq!(out, want);
        // User name and password.
        let (r, out) = run(
            &[&[5, 2, 1, 0][..], &ok4].concat(),
            Some(("u", "pw")),
            "192.0.2.1:25",
        );
        r.unwrap();
        assert_eq!(&out[..12], &[5, 2, 0, 2, 1, 1, b'u', 2, b'p', b'w', 5, 1]);
    }

    #[test]
    fn failures() {
        type Case<'a> = (&'a [u8], Option<(&'a str, &'a str)>, &'a str);
        let cases: &[Case<'_>] = &[
            (&[4, 0], None, "not a SOCKS5 proxy"),
            (&[5, 0xff], None, "none of our authentication methods"),
            (&[5, 2], None, "did not offer"),
            (&[5, 2, 1, 1], Some(("u", "p")), "refused our user name"),
            (&[5, 0, 5, 5, 0, 1], None, "connection refused"),
            (&[5, 0, 5, 2, 0, 1], None, "not allowed by ruleset"),
            (&[5, 0, 5, 0, 0, 9], None, "bad address type"),
            (&[5, 0, 5, 0, 0, 1, 1], None, "closed the connection"),
            (&[5], None, "closed the connection"),
            (&[], None, "closed the connection"),
        ];
        for (input, auth, want) in cases {
            let (r, _) = run(input, *auth, "192.0.2.1:25");
            let e = r.unwrap_err().to_string();
            assert!(e.contains(want), "{input:?}: {e}");
        }
    }
}
