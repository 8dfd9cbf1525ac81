//! TLS policy for outgoing delivery, as pure decisions: MTA-STS (RFC 8461), DANE for SMTP
//! (RFC 7672), REQUIRETLS and `TLS-Required: No` (RFC 8689), and SMTP TLS reporting
//! (RFC 8460).
//!
//! * [`mtasts`]: the `_mta-sts` record, the policy file, MX patterns, and [`decide`]: which
//!   policy a delivery uses given the cache, the record answer and a fetch outcome (the
//!   fetch over HTTPS is the caller's effect).
//! * [`dane`]: DNS facts about one MX host to a [`DaneVerdict`]; the TLSA records of a
//!   secure verdict are what [`crate::client::Verify::Dane`] checks in the handshake.
//! * [`requirement`](mod@requirement): the policies and the message's flag combined into a
//!   [`TlsRequirement`] per MX host.
//! * [`results`]: a connection's TLS outcome (or a failed policy fetch) to the
//!   [`SessionResult`]s to record, per report scope.
//! * [`tlsrpt`]: the `_smtp._tls` record, [`TlsResults`] collected per policy domain and
//!   scope, the JSON report (built, gzipped, parsed).
//! * [`session`]: the machine that runs the above for one delivery: [`PolicySession`]
//!   answers the delivery machine's `HostTls` question per MX host, asking for DNS, the
//!   cached policy and the policy fetch as effects.
//! * [`incoming`]: which of our policy domains an incoming report is kept under.
//! * [`outgoing`]: the reports we send: stored results grouped per finished day and scope,
//!   who receives them (mox's rules), the report message.
//!
//! Nothing here performs I/O or reads a clock; time is a [`crate::UnixTime`] argument.
//! The outbound driver (`driver/src/outbound.rs`) runs a [`PolicySession`] beside every
//! direct delivery (see the README's Architecture section).

pub mod dane;
pub mod incoming;
pub mod mtasts;
#[cfg(test)]
mod mutation;
pub mod outgoing;
pub mod requirement;
pub mod results;
#[cfg(test)]
mod scenarios;
pub mod session;
pub mod tlsrpt;

pub use dane::{
    is_usable, tlsa_name, AddressFacts, DaneCheck, DaneInput, DaneSecure, DaneStep, DaneVerdict,
    InsecureReason,
};
pub use mtasts::{
    decide, needs_refresh, policy_from_response, policy_url, refresh, refresh_due, Applied,
    CacheAction, CachedPolicy, FetchError, Mode, MxPattern, PolicySource, RecordAnswer,
    StsDecision, StsPolicy, StsPolicyError, StsRecord, StsRecordError, MAX_POLICY_SIZE,
    REFRESH_AFTER_SECS, REFRESH_RECENT_USE_SECS,
};
pub use requirement::{
    requirement, ConnectTls, FailReason, MessageTls, OnFailure, SkipReason, StartTls,
    TlsRequirement, Verification,
};
pub use results::{fetch_failure_result, session_results, Endpoints, TlsOutcome};
pub use session::{
    message_tls, to_host_tls, CacheUpdate, FetchRequest, FetchResponse, HostVerdict, PolicyConfig,
    PolicyError, PolicySession, StsCacheEntry,
};
pub use tlsrpt::{
    day_range, parse_report, parse_report_file, parse_report_file_max, parse_report_max,
    parse_report_message, parse_report_message_max, DateRange, FailureDetails, Policy,
    PolicyResult, PolicyType, Report, ReportScope, ReportUri, ResultType, SessionResult, Summary,
    TlsReportError, TlsResults, TlsrptRecord, TlsrptRecordError,
};
