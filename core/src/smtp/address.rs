//! Addresses and paths (RFC 5321 4.1.2, RFC 6531 for SMTPUTF8).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A domain name, kept in both forms: the lower-case A-label (ASCII, punycode) form used on
/// the wire and in DNS, and the U-label (Unicode) form for display and SMTPUTF8.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain {
    /// Lower-case ASCII form (`xn--...` for IDNs), no trailing dot.
    pub ascii: String,
    /// Unicode form; equal to `ascii` for plain ASCII names.
    pub unicode: String,
}

/// The host part of an address or an EHLO argument.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// A domain name.
    Domain(Domain),
    /// An IPv4 address literal, `[192.0.2.1]`.
    Ipv4(Ipv4Addr),
    /// An IPv6 address literal, `[IPv6:2001:db8::1]`.
    Ipv6(Ipv6Addr),
}

/// A local part, as its value (quotes and escapes removed). It may be empty (`""@domain`)
/// and may hold UTF-8 (SMTPUTF8).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Localpart(pub String);

/// A mailbox: `localpart@host`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Address {
    /// The local part.
    pub localpart: Localpart,
    /// The domain or address literal.
    pub host: Host,
}

/// The MAIL FROM path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ReversePath {
    /// `<>`, the null sender (bounces, DSNs).
    Null,
    /// A sender mailbox.
    Mailbox(Address),
}

/// The RCPT TO path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ForwardPath {
    /// `<postmaster>` without a domain (RFC 5321 4.5.1), any case.
    Postmaster,
    /// A recipient mailbox.
    Mailbox(Address),
}

/// Why an address or path did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// The path is not enclosed in `<` and `>`.
    #[error("path must be enclosed in < and >")]
    MissingBrackets,
    /// The local part is malformed (bad character, unbalanced quote, too long).
    #[error("bad localpart: {0}")]
    Localpart(String),
    /// The domain is malformed or fails IDNA conversion.
    #[error("bad domain: {0}")]
    Domain(String),
    /// An address literal is malformed.
    #[error("bad address literal: {0}")]
    AddressLiteral(String),
    /// There is no `@` separating local part and domain.
    #[error("missing @ in address")]
    MissingAt,
}
