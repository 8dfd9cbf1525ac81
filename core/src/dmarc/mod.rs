//! DMARC (RFC 9989, "DMARCbis", which obsoletes RFC 7489 and RFC 9091): record parsing,
//! policy discovery and Organizational Domains by the DNS tree walk (no public suffix
//! list), SPF and DKIM identifier alignment, the policy to apply (`p`, `sp`, `np`, test
//! mode `t`), and aggregate reports (RFC 9990 and RFC 7489 ones parsed, RFC 9990 ones
//! built).
//!
//! [`DmarcVerify`] is a [`crate::dns::Check`] that takes the SPF and DKIM outcomes in a
//! [`DmarcInput`] and returns a [`DmarcResult`].

pub mod record;
pub mod report;
pub mod verify;

pub use record::{mailto_address, Align, DmarcRecord, Policy, Psd, RecordError, ReportUri};
pub use report::{
    aggregate_report, build_report, evaluation_is_optional, incoming_report_domain, parse_report,
    parse_report_file, parse_report_message, AggregateReport, AlignResult, AuthResults,
    DiscoveryMethod, Disposition, DkimAuth, Evaluation, Feedback, Identifiers, PolicyPublished,
    Reason, ReportError, ReportMetadata, ReportRecord, SpfAuth, StoredEvaluation, DMARC_NS,
    GENERATOR, MAX_PROBLEMS,
};
pub use verify::{
    tree_walk_names, DmarcError, DmarcInput, DmarcResult, DmarcStatus, DmarcVerify, MAX_LOOKUPS,
    MAX_WALK_QUERIES,
};
