//! HTTP/1.1, sans-IO: one layer for every HTTP use of rmox.
//!
//! * [`codec`]: request and response heads (on `httparse`), body framing and decoding
//!   (Content-Length, chunked, until close) with size limits, and encoders.
//! * [`fetch`]: [`HttpsFetch`], the client machine for one HTTPS request over the core TLS
//!   layer (MTA-STS policy fetches, RFC 8461 3.3; TLS reports to https `rua`, RFC 8460 3).
//!
//! The machines follow the crate's driving contract (see the crate docs).

pub mod codec;
pub mod fetch;

pub use codec::{
    BodyDecoder, EncodeError, Framing, Header, HttpError, Limits, RequestHead, ResponseHead,
};
pub use fetch::{FetchConfig, FetchError, FetchRequest, HttpsFetch, Method, Response};
