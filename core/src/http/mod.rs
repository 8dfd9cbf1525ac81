//! HTTP/1.1, sans-IO: one layer for every HTTP use of rmox.
//!
//! * [`codec`]: request and response heads (on `httparse`), body framing and decoding
//!   (Content-Length, chunked, until close) with size limits, and encoders.
//! * [`fetch`]: [`HttpsFetch`], the client machine for one HTTPS request over the core TLS
//!   layer (MTA-STS policy fetches, RFC 8461 3.3; TLS reports to https `rua`, RFC 8460 3).
//! * [`multipart`]: multipart/form-data request bodies (RFC 7578) read into borrowed
//!   [`FormPart`]s (the webapi's form with files).
//! * [`server`]: [`HttpServerSession`], one server connection (plain or implicit TLS) with
//!   keep-alive and pipelining; each request goes to the caller as an effect and is answered
//!   with a [`Response`] (metrics, ACME http-01, the MTA-STS policy, the webapi).
//!
//! The machines follow the crate's driving contract (see the crate docs).

pub mod codec;
pub mod fetch;
pub mod multipart;
pub mod server;

pub use codec::{
    BodyDecoder, EncodeError, Framing, Header, HttpError, Limits, RequestHead, ResponseHead,
};
pub use fetch::{FetchConfig, FetchError, FetchRequest, HttpsFetch, Method};
pub use multipart::{FormError, FormLimits, FormPart};
pub use server::{HttpServerSession, ServerConfig};

/// A response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code (for a fetch, 3xx included: redirects are not followed).
    pub status: u16,
    /// The header fields.
    pub headers: Vec<Header>,
    /// The decoded body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with a `Content-Type` and a body.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![Header::new("Content-Type", content_type)],
            body: body.into(),
        }
    }

    /// The `Content-Type` header, if present.
    pub fn content_type(&self) -> Option<&str> {
        codec::header(&self.headers, "content-type")
    }
}
