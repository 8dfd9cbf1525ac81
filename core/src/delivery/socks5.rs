//! The client side of a SOCKS5 handshake (RFC 1928, with RFC 1929 user name/password
//! authentication) as bytes: the delivery machine runs it on a connection to the proxy
//! before the SMTP session, so drivers only ever open plain TCP connections.
//!
//! CONNECT always names an IP address: the MX hosts are resolved by us, so the proxy never
//! resolves a name.

use std::net::{IpAddr, SocketAddr};

/// Why the proxy did not give us a connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Socks5Error {
    /// The proxy answered with something that is not SOCKS5.
    #[error("proxy protocol error: {0}")]
    Protocol(&'static str),
    /// The proxy accepts none of the authentication methods we offered.
    #[error("proxy accepts none of our authentication methods")]
    NoMethod,
    /// The proxy refused our user name and password.
    #[error("proxy refused our user name and password")]
    AuthFailed,
    /// User name or password longer than 255 bytes (RFC 1929 limit).
    #[error("proxy user name or password too long")]
    CredentialsTooLong,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the method choice.
    Method,
    /// Waiting for the user name/password verdict.
    Auth,
    /// Waiting for the CONNECT reply.
    Connect,
    /// The tunnel is up.
    Done,
}

/// One SOCKS5 client handshake.
#[derive(Clone)]
pub struct Socks5Client {
    target: SocketAddr,
    auth: Option<(String, String)>,
    state: State,
}

impl std::fmt::Debug for Socks5Client {
    /// Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socks5Client")
            .field("target", &self.target)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Socks5Client {
    /// A handshake asking the proxy to connect to `target`; the greeting to send is
    /// appended to `out`.
    pub fn new(
        target: SocketAddr,
        auth: Option<(String, String)>,
        out: &mut Vec<u8>,
    ) -> Socks5Client {
        if auth.is_some() {
            out.extend_from_slice(&[5, 2, 0, 2]);
        } else {
            out.extend_from_slice(&[5, 1, 0]);
        }
        Socks5Client {
            target,
            auth,
            state: State::Method,
        }
    }

    /// Whether the tunnel is up.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Takes bytes from the proxy: returns how many were consumed (never beyond the end of
    /// the handshake: what follows belongs to the tunnelled protocol). What to send next is
    /// appended to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, Socks5Error> {
        let mut used = 0;
        loop {
            let rest = input.get(used..).unwrap_or_default();
            let n = match self.state {
                State::Done => return Ok(used),
                State::Method => self.method(rest, out)?,
                State::Auth => self.auth_reply(rest, out)?,
                State::Connect => self.connect_reply(rest)?,
            };
            if n == 0 {
                return Ok(used);
            }
            used += n;
        }
    }

    fn request(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[5, 1, 0]);
        match self.target.ip() {
            IpAddr::V4(a) => {
                out.push(1);
                out.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                out.push(4);
                out.extend_from_slice(&a.octets());
            }
        }
        out.extend_from_slice(&self.target.port().to_be_bytes());
    }

    fn method(&mut self, rest: &[u8], out: &mut Vec<u8>) -> Result<usize, Socks5Error> {
        let Some(&[ver, method]) = rest.get(..2) else {
            return Ok(0);
        };
        if ver != 5 {
            return Err(Socks5Error::Protocol("not a SOCKS5 proxy"));
        }
        match (method, &self.auth) {
            (0, _) => {
                self.request(out);
                self.state = State::Connect;
            }
            (2, Some((user, pass))) => {
                let (Ok(ul), Ok(pl)) = (u8::try_from(user.len()), u8::try_from(pass.len())) else {
                    return Err(Socks5Error::CredentialsTooLong);
                };
                out.push(1);
                out.push(ul);
                out.extend_from_slice(user.as_bytes());
                out.push(pl);
                out.extend_from_slice(pass.as_bytes());
                self.state = State::Auth;
            }
            (0xff, _) => return Err(Socks5Error::NoMethod),
            _ => {
                return Err(Socks5Error::Protocol(
                    "proxy chose a method we did not offer",
                ))
            }
        }
        Ok(2)
    }

    fn auth_reply(&mut self, rest: &[u8], out: &mut Vec<u8>) -> Result<usize, Socks5Error> {
        let Some(&[ver, status]) = rest.get(..2) else {
            return Ok(0);
        };
        if ver != 1 {
            return Err(Socks5Error::Protocol("bad authentication reply version"));
        }
        if status != 0 {
            return Err(Socks5Error::AuthFailed);
        }
        self.request(out);
        self.state = State::Connect;
        Ok(2)
    }

    fn connect_reply(&mut self, rest: &[u8]) -> Result<usize, Socks5Error> {
        let Some(&[ver, rep, _rsv, atyp]) = rest.get(..4) else {
            return Ok(0);
        };
        if ver != 5 {
            return Err(Socks5Error::Protocol("bad reply version"));
        }
        if rep != 0 {
            return Err(Socks5Error::Refused(reply_text(rep)));
        }
        let addr_len = match atyp {
            1 => 4,
            4 => 16,
            3 => match rest.get(4) {
                Some(&l) => 1 + usize::from(l),
                None => return Ok(0),
            },
            _ => return Err(Socks5Error::Protocol("bad address type in reply")),
        };
        let total = 4 + addr_len + 2;
        if rest.len() < total {
            return Ok(0);
        }
        self.state = State::Done;
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_with_auth_in_one_byte_pieces() {
        let mut out = Vec::new();
        let target: SocketAddr = "192.0.2.1:25".parse().unwrap();
        let mut c = Socks5Client::new(target, Some(("u".into(), "pw".into())), &mut out);
        assert_eq!(out, [5, 2, 0, 2]);
        out.clear();
        let mut server: Vec<u8> = vec![5, 2, 1, 0, 5, 0, 0, 1, 10, 0, 0, 1, 0, 25];
        server.extend_from_slice(b"220 hi\r\n");
        // One more byte available each round; unconsumed bytes are offered again.
        let mut fed = 0;
        let mut avail = 0;
        while !c.is_done() && avail < server.len() {
            avail += 1;
            fed += c.feed(&server[fed..avail], &mut out).unwrap();
        }
        assert!(c.is_done());
        assert_eq!(&server[fed..], b"220 hi\r\n");
        assert_eq!(
            out,
            [1, 1, b'u', 2, b'p', b'w', 5, 1, 0, 1, 192, 0, 2, 1, 0, 25]
        );
    }

    #[test]
    fn refusals() {
        let t: SocketAddr = "[2001:db8::1]:25".parse().unwrap();
        type Case<'a> = (&'a [u8], Option<(String, String)>, Socks5Error);
        let cases: [Case<'_>; 4] = [
            (&[5, 0xff], None, Socks5Error::NoMethod),
            (&[4, 0], None, Socks5Error::Protocol("not a SOCKS5 proxy")),
            (
                &[5, 2, 1, 1],
                Some(("u".into(), "p".into())),
                Socks5Error::AuthFailed,
            ),
            (
                &[5, 0, 5, 5, 0, 1],
                None,
                Socks5Error::Refused("connection refused"),
            ),
        ];
        for (input, auth, want) in cases {
            let mut out = Vec::new();
            let mut c = Socks5Client::new(t, auth, &mut out);
            assert_eq!(c.feed(input, &mut out), Err(want));
        }
    }
}
