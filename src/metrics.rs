//! Prometheus metrics (text exposition format 0.0.4) at `GET /metrics` on the listeners with
//! `metrics = { port }` (plain HTTP, through the same HTTP server machine as the MTA-STS
//! policies).
//!
//! Counters are process-wide atomics (one add on the hot path, no allocation, no lock),
//! incremented where the events already are: the SMTP session's events and connection
//! checks (`world.rs`), DNS batches (`resolve.rs`), delivery outcomes (`queue.rs`). Storage
//! counts its own commits (`rmox_storage::commit_stats`). The queue's size by state is read
//! from storage when scraped.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rmox_core::http::{RequestHead, Response};
use rmox_storage::{MailStore, QueueFilter};

/// SMTP verbs counted by name; others count as `other`.
const VERBS: [&str; 15] = [
    "EHLO", "HELO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "STARTTLS", "AUTH",
    "VRFY", "EXPN", "HELP", "other",
];

/// SASL mechanisms counted by name; others count as `other`.
const MECHANISMS: [&str; 8] = [
    "PLAIN",
    "LOGIN",
    "CRAM-MD5",
    "SCRAM-SHA-1",
    "SCRAM-SHA-1-PLUS",
    "SCRAM-SHA-256",
    "SCRAM-SHA-256-PLUS",
    "other",
];

/// DNS answer kinds.
const DNS_RESULTS: [&str; 4] = ["records", "nxdomain", "nodata", "tempfail"];

/// Outgoing delivery results.
const DELIVERY_RESULTS: [&str; 3] = ["delivered", "temporary", "permanent"];

/// TLS modes of an outgoing attempt (core's `mode_name`: STARTTLS skipped, opportunistic,
/// required, implicit TLS), `none` when no connection got as far as TLS.
const TLS_MODES: [&str; 6] = [
    "none",
    "skip",
    "opportunistic",
    "required",
    "implicit",
    "other",
];

/// Upper bounds (seconds) of the latency histograms' buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A histogram of durations (cumulative buckets at render time).
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; LATENCY_BUCKETS.len()],
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            if let Some(b) = self.buckets.get(i) {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            d.as_micros().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }
}

/// The SMTP counters of one listener (`[[listener]] name`): a connection's are found once,
/// when it starts, and kept with it.
pub struct ListenerMetrics {
    /// Connections by kind (0 smtp, 1 submission) and outcome (0 accepted, 1 refused).
    connections: [[AtomicU64; 2]; 2],
    commands: [AtomicU64; VERBS.len()],
    /// Replies by class 2xx..5xx.
    replies: [AtomicU64; 4],
}

impl ListenerMetrics {
    fn new() -> ListenerMetrics {
        ListenerMetrics {
            connections: [const { [const { AtomicU64::new(0) }; 2] }; 2],
            commands: [const { AtomicU64::new(0) }; VERBS.len()],
            replies: [const { AtomicU64::new(0) }; 4],
        }
    }

    /// A connection was accepted or refused at its start.
    pub fn connection(&self, submission: bool, accepted: bool) {
        inc(self
            .connections
            .get(usize::from(submission))
            .and_then(|k| k.get(usize::from(!accepted))));
    }

    /// A command was received (its verb).
    pub fn command(&self, verb: &str) {
        inc(self.commands.get(index(&VERBS, verb)));
    }

    /// A reply was sent.
    pub fn reply(&self, code: u16) {
        if (200..600).contains(&code) {
            inc(self.replies.get(usize::from(code / 100 - 2)));
        }
    }
}

/// Every counter of the process.
pub struct Metrics {
    /// Our own addresses in DNSBL zones: (ip, zone) -> listed (the monitor's last round).
    own_dnsbl: std::sync::Mutex<Vec<(IpAddr, String, bool)>>,
    /// Per listener, by name (a handful; looked up once per connection).
    listeners: std::sync::Mutex<Vec<(String, Arc<ListenerMetrics>)>>,
    /// Messages accepted by kind (0 smtp, 1 submission), and their bytes.
    accepted: [AtomicU64; 2],
    accepted_bytes: [AtomicU64; 2],
    /// Recipients that failed after the data was accepted.
    recipient_failures: AtomicU64,
    auth_failures: [AtomicU64; MECHANISMS.len()],
    auth_successes: [AtomicU64; MECHANISMS.len()],
    dns_lookups: [AtomicU64; DNS_RESULTS.len()],
    dns_latency: Histogram,
    deliveries: [[AtomicU64; TLS_MODES.len()]; DELIVERY_RESULTS.len()],
}

static METRICS: Metrics = Metrics {
    own_dnsbl: std::sync::Mutex::new(Vec::new()),
    listeners: std::sync::Mutex::new(Vec::new()),
    accepted: [AtomicU64::new(0), AtomicU64::new(0)],
    accepted_bytes: [AtomicU64::new(0), AtomicU64::new(0)],
    recipient_failures: AtomicU64::new(0),
    auth_failures: [const { AtomicU64::new(0) }; MECHANISMS.len()],
    auth_successes: [const { AtomicU64::new(0) }; MECHANISMS.len()],
    dns_lookups: [const { AtomicU64::new(0) }; DNS_RESULTS.len()],
    dns_latency: Histogram::new(),
    deliveries: [const { [const { AtomicU64::new(0) }; TLS_MODES.len()] }; DELIVERY_RESULTS.len()],
};

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

fn inc(a: Option<&AtomicU64>) {
    if let Some(a) = a {
        a.fetch_add(1, Ordering::Relaxed);
    }
}

fn index(list: &[&str], name: &str) -> usize {
    list.iter()
        .position(|n| n.eq_ignore_ascii_case(name))
        .unwrap_or(list.len() - 1)
}

impl Metrics {
    /// The DNSBL monitor's finding about our address `ip` in `zone`.
    pub fn own_dnsbl(&self, ip: IpAddr, zone: &str, listed: bool) {
        let mut v = self.own_dnsbl.lock().unwrap_or_else(|p| p.into_inner());
        match v.iter_mut().find(|(i, z, _)| *i == ip && z == zone) {
            Some(e) => e.2 = listed,
            None => v.push((ip, zone.to_string(), listed)),
        }
    }

    /// The counters of the listener named `name` (made on first use).
    pub fn listener(&self, name: &str) -> Arc<ListenerMetrics> {
        let mut l = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, m)) = l.iter().find(|(n, _)| n == name) {
            return Arc::clone(m);
        }
        let m = Arc::new(ListenerMetrics::new());
        l.push((name.to_string(), Arc::clone(&m)));
        m
    }

    fn listeners(&self) -> Vec<(String, Arc<ListenerMetrics>)> {
        let mut l = self
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        l.sort_by(|a, b| a.0.cmp(&b.0));
        l
    }

    /// A message was accepted with 250.
    pub fn accepted(&self, submission: bool, size: usize) {
        let k = usize::from(submission);
        inc(self.accepted.get(k));
        if let Some(b) = self.accepted_bytes.get(k) {
            b.fetch_add(size as u64, Ordering::Relaxed);
        }
    }

    /// A recipient of an accepted message could not be delivered to.
    pub fn recipient_failed(&self) {
        self.recipient_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// An authentication attempt ended.
    pub fn auth(&self, mechanism: &str, ok: bool) {
        let i = index(&MECHANISMS, mechanism);
        inc(if ok {
            self.auth_successes.get(i)
        } else {
            self.auth_failures.get(i)
        });
    }

    /// A batch of DNS answers came after `took`.
    pub fn dns(&self, answers: &[rmox_core::dns::LookupResult], took: Duration) {
        use rmox_core::dns::LookupResult as L;
        for a in answers {
            let i = match a {
                L::Records { .. } => 0,
                L::NxDomain => 1,
                L::NoData => 2,
                L::TempFail(_) => 3,
            };
            inc(self.dns_lookups.get(i));
        }
        if !answers.is_empty() {
            self.dns_latency.observe(took);
        }
    }

    /// An outgoing delivery attempt's result for one recipient, with the TLS mode of its
    /// connection (`None`: no connection got as far as TLS).
    pub fn delivery(&self, result: &rmox_core::queue::AttemptResult, tls_mode: Option<&str>) {
        use rmox_core::queue::AttemptResult as A;
        let r = match result {
            A::Delivered { .. } => 0,
            A::Temporary(_) => 1,
            A::Permanent(_) => 2,
        };
        let m = tls_mode.map_or(0, |m| index(&TLS_MODES, m));
        inc(self.deliveries.get(r).and_then(|t| t.get(m)));
    }
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// A label value escaped for the text format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.histogram_values(
            name,
            help,
            &LATENCY_BUCKETS,
            &h.buckets.iter().map(load).collect::<Vec<_>>(),
            load(&h.count),
            load(&h.sum_micros) as f64 / 1e6,
        );
    }

    fn histogram_values(
        &mut self,
        name: &str,
        help: &str,
        bounds: &[f64],
        buckets: &[u64],
        count: u64,
        sum: f64,
    ) {
        self.head(name, "histogram", help);
        let mut acc = 0u64;
        for (le, n) in bounds.iter().zip(buckets) {
            acc += n;
            self.sample(&format!("{name}_bucket"), &[("le", &le.to_string())], acc);
        }
        self.sample(&format!("{name}_bucket"), &[("le", "+Inf")], count);
        self.sample(&format!("{name}_sum"), &[], sum);
        self.sample(&format!("{name}_count"), &[], count);
    }
}

/// The text exposition of every metric; the queue's size by state from `store` at `now`.
pub fn render(store: Option<&dyn MailStore>, now: rmox_core::UnixTime) -> String {
    let m = get();
    let mut o = Out(String::with_capacity(8192));
    let kinds = ["smtp", "submission"];
    let listeners = m.listeners();
    o.head(
        "rmox_smtp_connections_total",
        "counter",
        "SMTP connections by listener, port kind and whether they were accepted.",
    );
    for (name, l) in &listeners {
        for (k, kind) in kinds.iter().enumerate() {
            for (r, result) in ["accepted", "refused"].iter().enumerate() {
                let v = l.connections.get(k).and_then(|x| x.get(r)).map_or(0, load);
                o.sample(
                    "rmox_smtp_connections_total",
                    &[("listener", name), ("kind", kind), ("result", result)],
                    v,
                );
            }
        }
    }
    o.head(
        "rmox_smtp_commands_total",
        "counter",
        "SMTP commands received, by listener and verb.",
    );
    for (name, l) in &listeners {
        for (v, verb) in VERBS.iter().enumerate() {
            let n = l.commands.get(v).map_or(0, load);
            o.sample(
                "rmox_smtp_commands_total",
                &[("listener", name), ("verb", verb)],
                n,
            );
        }
    }
    o.head(
        "rmox_smtp_replies_total",
        "counter",
        "SMTP replies sent, by listener and class (the outcome of commands).",
    );
    for (name, l) in &listeners {
        for (i, class) in ["2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
            let n = l.replies.get(i).map_or(0, load);
            o.sample(
                "rmox_smtp_replies_total",
                &[("listener", name), ("class", class)],
                n,
            );
        }
    }
    o.head(
        "rmox_messages_accepted_total",
        "counter",
        "Messages accepted with 250, by port kind.",
    );
    for (k, kind) in kinds.iter().enumerate() {
        let n = m.accepted.get(k).map_or(0, load);
        o.sample("rmox_messages_accepted_total", &[("kind", kind)], n);
    }
    o.head(
        "rmox_message_bytes_accepted_total",
        "counter",
        "Octets of the messages accepted, by port kind.",
    );
    for (k, kind) in kinds.iter().enumerate() {
        let n = m.accepted_bytes.get(k).map_or(0, load);
        o.sample("rmox_message_bytes_accepted_total", &[("kind", kind)], n);
    }
    o.head(
        "rmox_recipient_failures_total",
        "counter",
        "Recipients of accepted messages that could not be delivered to locally.",
    );
    o.sample(
        "rmox_recipient_failures_total",
        &[],
        load(&m.recipient_failures),
    );
    o.head(
        "rmox_auth_total",
        "counter",
        "Authentication attempts by SASL mechanism and result.",
    );
    for (i, mech) in MECHANISMS.iter().enumerate() {
        for (result, list) in [("ok", &m.auth_successes), ("failed", &m.auth_failures)] {
            let n = list.get(i).map_or(0, load);
            o.sample(
                "rmox_auth_total",
                &[("mechanism", mech), ("result", result)],
                n,
            );
        }
    }
    o.head(
        "rmox_dns_lookups_total",
        "counter",
        "DNS lookups answered, by answer kind.",
    );
    for (i, r) in DNS_RESULTS.iter().enumerate() {
        let n = m.dns_lookups.get(i).map_or(0, load);
        o.sample("rmox_dns_lookups_total", &[("result", r)], n);
    }
    o.histogram(
        "rmox_dns_batch_seconds",
        "Time to answer a batch of DNS lookups (one check round).",
        &m.dns_latency,
    );
    o.head(
        "rmox_delivery_attempts_total",
        "counter",
        "Outgoing delivery attempts per recipient, by result and TLS mode.",
    );
    for (r, result) in DELIVERY_RESULTS.iter().enumerate() {
        for (t, tls) in TLS_MODES.iter().enumerate() {
            let n = m.deliveries.get(r).and_then(|x| x.get(t)).map_or(0, load);
            o.sample(
                "rmox_delivery_attempts_total",
                &[("result", result), ("tls", tls)],
                n,
            );
        }
    }
    let cs = rmox_storage::commit_stats();
    o.histogram_values(
        "rmox_storage_commit_seconds",
        "Time of each durable storage commit (group commit: one per batch).",
        &rmox_storage::COMMIT_BUCKETS,
        &cs.buckets,
        cs.commits,
        cs.seconds,
    );
    o.head(
        "rmox_storage_commit_writes_total",
        "counter",
        "Writes made durable by the storage commits (the batch sizes summed).",
    );
    o.sample("rmox_storage_commit_writes_total", &[], cs.writes);
    let (appends, records) = rmox_storage::log_stats();
    o.head(
        "rmox_storage_log_appends_total",
        "counter",
        "Appends to the acceptance log (one fdatasync each).",
    );
    o.sample("rmox_storage_log_appends_total", &[], appends);
    o.head(
        "rmox_storage_log_records_total",
        "counter",
        "Writes made durable by acceptance-log appends (the records appended).",
    );
    o.sample("rmox_storage_log_records_total", &[], records);
    if let Some(store) = store {
        if let Ok(entries) = store.queue_list(&QueueFilter::default()) {
            let (mut held, mut due, mut waiting) = (0u64, 0u64, 0u64);
            for e in &entries {
                if e.rcpt.hold {
                    held += 1;
                } else if e.rcpt.next_attempt <= now {
                    due += 1;
                } else {
                    waiting += 1;
                }
            }
            o.head(
                "rmox_queue_entries",
                "gauge",
                "Outgoing queue entries (one per recipient) by state.",
            );
            for (state, n) in [("held", held), ("due", due), ("waiting", waiting)] {
                o.sample("rmox_queue_entries", &[("state", state)], n);
            }
        }
    }
    let own = m
        .own_dnsbl
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if !own.is_empty() {
        o.head(
            "rmox_dnsbl_own_listed",
            "gauge",
            "Whether our sending address is listed in a DNSBL zone (1) or not (0), at the monitor's last look.",
        );
        for (ip, zone, listed) in own {
            o.sample(
                "rmox_dnsbl_own_listed",
                &[("ip", &ip.to_string()), ("zone", &zone)],
                u64::from(listed),
            );
        }
    }
    o.0
}

/// Answers `GET /metrics` on the metrics listeners.
pub struct MetricsWeb {
    /// The store whose queue is counted.
    pub store: Arc<dyn MailStore>,
}

impl rmox_driver::http::HttpAnswerer for MetricsWeb {
    fn answer(&self, _remote: std::net::SocketAddr, head: RequestHead, _body: Vec<u8>) -> Response {
        let path = head.target.split(['?', '#']).next().unwrap_or_default();
        if path != "/metrics" {
            return Response::new(404, "text/plain; charset=utf-8", "not found\n");
        }
        if !head.method.eq_ignore_ascii_case("GET") && !head.method.eq_ignore_ascii_case("HEAD") {
            return Response::new(405, "text/plain; charset=utf-8", "method not allowed\n");
        }
        let now = rmox_driver::now().wall;
        Response::new(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            render(Some(self.store.as_ref()), now),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The text format: label values escaped, histogram buckets cumulative and ending
    /// with +Inf equal to the count, with _sum and _count.
    #[test]
    fn text_format() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let h = Histogram::new();
        h.observe(Duration::from_micros(200));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(10));
        let mut o = Out(String::new());
        o.histogram("x_seconds", "help", &h);
        let lines: Vec<&str> = o.0.lines().collect();
        assert_eq!(lines[0], "# HELP x_seconds help");
        assert_eq!(lines[1], "# TYPE x_seconds histogram");
        assert_eq!(lines[2], "x_seconds_bucket{le=\"0.0005\"} 1");
        assert!(lines.contains(&"x_seconds_bucket{le=\"0.005\"} 2"));
        assert!(lines.contains(&"x_seconds_bucket{le=\"5\"} 2"));
        assert!(lines.contains(&"x_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(lines.contains(&"x_seconds_count 3"));
        assert!(lines.iter().any(|l| l.starts_with("x_seconds_sum 10.0032")));
        let mut o = Out(String::new());
        o.sample("m", &[("a", "x\"y"), ("b", "z")], 5);
        assert_eq!(o.0, "m{a=\"x\\\"y\",b=\"z\"} 5\n");
    }
}
