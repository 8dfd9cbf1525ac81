//! DMARC (RFC 7489): record parsing, policy discovery at the From domain and its
//! organizational domain ([`crate::publicsuffix`]), SPF and DKIM identifier alignment,
//! the policy to apply with `pct` sampling, and aggregate reports (parsing incoming ones,
//! building outgoing ones).
//!
//! [`DmarcVerify`] is a [`crate::dns::Check`] that takes the SPF and DKIM outcomes in a
//! [`DmarcInput`] and returns a [`DmarcResult`].

pub mod record;
pub mod report;
pub mod verify;

pub use record::{mailto_address, Align, DmarcRecord, Policy, RecordError, ReportUri};
pub use report::{
    aggregate_report, build_report, evaluation_is_optional, incoming_report_domain, parse_report,
    parse_report_file, parse_report_message, AggregateReport, AlignResult, AuthResults, DkimAuth,
    Evaluation, Feedback, Identifiers, PolicyPublished, Reason, ReportError, ReportMetadata,
    ReportRecord, SpfAuth, StoredEvaluation,
};
pub use verify::{aligned, DmarcError, DmarcInput, DmarcResult, DmarcStatus, DmarcVerify};
