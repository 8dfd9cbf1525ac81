//! Rate limits per IP address and per network, as decisions without a clock.
//!
//! Every count is kept at three network levels of the remote address: the address itself
//! (IPv4 /32, IPv6 /64), a small network (/26, /48) and a larger one (/21, /32), so that a
//! sender cannot escape a limit by moving to a neighbouring address. Each level has its own
//! limit ([`Levels`]); a level without a limit is not tracked at all.
//!
//! A [`Limiter`] counts in fixed windows ([`Window::Seconds`]: the count restarts when
//! `now / window` changes) or for all time ([`Window::Forever`], for counts that go down
//! again, such as open connections). Time always comes in as an argument.
//!
//! Memory is bounded: a window change drops every count of the previous window, a count
//! that falls to zero is removed, and each level tracks at most `max_keys` networks per
//! window. A network seen when its level is full is not counted at that level (that level
//! fails open for it) and [`Limiter::untracked`] grows; the coarser levels, which hold far
//! fewer keys for the same senders, still apply.
//!
//! On top of the generic limiter, [`ConnectionLimits`] decides whether a new connection is
//! served (connection rate, open connections, recent authentication failures) and
//! [`DeliveryLimiter`] whether an IP may deliver another message (messages and bytes per
//! minute and per day). Their replies follow mox: `421 4.7.0` before the greeting and
//! `452 4.2.2` for deliveries.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::smtp::{Enhanced, Reply};
use crate::UnixTime;

/// Number of network levels counted for every address.
pub const LEVELS: usize = 3;
/// IPv4 prefix lengths of the three levels.
pub const V4_PREFIXES: [u8; LEVELS] = [32, 26, 21];
/// IPv6 prefix lengths of the three levels.
pub const V6_PREFIXES: [u8; LEVELS] = [64, 48, 32];
/// Default cap on the networks tracked per level and window (see the module docs).
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// One network: an address masked to a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// The masked address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        mask(ip.to_canonical(), self.prefix) == *self
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn mask(ip: IpAddr, prefix: u8) -> Network {
    match ip {
        IpAddr::V4(a) => {
            let p = u32::from(prefix.min(32));
            let m = u32::MAX.checked_shl(32 - p).unwrap_or(0);
            Network {
                addr: IpAddr::V4(Ipv4Addr::from(u32::from(a) & m)),
                prefix: p as u8,
            }
        }
        IpAddr::V6(a) => {
            let p = u32::from(prefix.min(128));
            let m = u128::MAX.checked_shl(128 - p).unwrap_or(0);
            Network {
                addr: IpAddr::V6(Ipv6Addr::from(u128::from(a) & m)),
                prefix: p as u8,
            }
        }
    }
}

/// The three networks of `ip`, finest first. An IPv4-mapped IPv6 address counts as IPv4.
pub fn networks(ip: IpAddr) -> [Network; LEVELS] {
    let ip = ip.to_canonical();
    let prefixes = match ip {
        IpAddr::V4(_) => V4_PREFIXES,
        IpAddr::V6(_) => V6_PREFIXES,
    };
    prefixes.map(|p| mask(ip, p))
}

/// Limits per level (IP, small network, larger network); `None` means no limit there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Levels(pub [Option<u64>; LEVELS]);

impl Levels {
    /// The same kind of limit at all three levels.
    pub const fn new(ip: u64, small: u64, large: u64) -> Levels {
        Levels([Some(ip), Some(small), Some(large)])
    }

    /// A limit on single addresses only.
    pub const fn per_ip(n: u64) -> Levels {
        Levels([Some(n), None, None])
    }

    /// No limit anywhere.
    pub const fn none() -> Levels {
        Levels([None; LEVELS])
    }
}

/// How long counts last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Fixed windows of this many seconds (at least 1): counts restart when
    /// `now / seconds` changes.
    Seconds(u64),
    /// Counts never expire; they go down with [`Limiter::remove`].
    Forever,
}

impl Window {
    /// The index of the window `now` falls in (always 0 for [`Window::Forever`]).
    pub fn index(self, now: UnixTime) -> i64 {
        match self {
            Window::Seconds(s) => now
                .0
                .div_euclid(i64::try_from(s.max(1)).unwrap_or(i64::MAX)),
            Window::Forever => 0,
        }
    }
}

/// A limit that would be exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Over {
    /// Level (0 = the IP itself).
    pub level: usize,
    /// The network at that level.
    pub network: Network,
    /// The limit.
    pub limit: u64,
    /// The count before the refused addition.
    pub count: u64,
}

/// Counts per network at three levels in one kind of window; see the module docs.
#[derive(Debug, Clone)]
pub struct Limiter {
    window: Window,
    limits: Levels,
    max_keys: usize,
    index: i64,
    counts: [BTreeMap<Network, u64>; LEVELS],
    untracked: u64,
}

impl Limiter {
    /// A limiter with `limits` per level in `window`, tracking at most `max_keys` networks
    /// per level.
    pub fn new(window: Window, limits: Levels, max_keys: usize) -> Limiter {
        Limiter {
            window,
            limits,
            max_keys,
            index: i64::MIN,
            counts: Default::default(),
            untracked: 0,
        }
    }

    /// The limits.
    pub fn limits(&self) -> Levels {
        self.limits
    }

    /// Drops the counts of an earlier window.
    fn roll(&mut self, now: UnixTime) {
        let i = self.window.index(now);
        if i != self.index {
            self.index = i;
            for m in &mut self.counts {
                m.clear();
            }
        }
    }

    /// Current counts of `ip`'s networks (0 where a level is not tracked).
    pub fn count(&mut self, now: UnixTime, ip: IpAddr) -> [u64; LEVELS] {
        self.roll(now);
        let nets = networks(ip);
        let mut out = [0; LEVELS];
        for (i, n) in nets.iter().enumerate() {
            out[i] = self.counts[i].get(n).copied().unwrap_or(0);
        }
        out
    }

    /// Whether adding `n` for `ip` would exceed a limit: the first level that would.
    pub fn check(&mut self, now: UnixTime, ip: IpAddr, n: u64) -> Result<(), Over> {
        self.roll(now);
        for (level, net) in networks(ip).iter().enumerate() {
            let Some(limit) = self.limits.0[level] else {
                continue;
            };
            let count = self.counts[level].get(net).copied().unwrap_or(0);
            if count.saturating_add(n) > limit {
                return Err(Over {
                    level,
                    network: *net,
                    limit,
                    count,
                });
            }
        }
        Ok(())
    }

    /// Adds `n` for `ip` when no limit would be exceeded (otherwise changes nothing).
    pub fn add(&mut self, now: UnixTime, ip: IpAddr, n: u64) -> Result<(), Over> {
        self.check(now, ip, n)?;
        self.record(now, ip, n);
        Ok(())
    }

    /// Adds `n` for `ip` whatever the limits (for things that happened: an accepted
    /// message, a failed login).
    pub fn record(&mut self, now: UnixTime, ip: IpAddr, n: u64) {
        self.roll(now);
        for (level, net) in networks(ip).into_iter().enumerate() {
            self.record_at(level, net, n);
        }
    }

    fn record_at(&mut self, level: usize, net: Network, n: u64) {
        if self.limits.0[level].is_none() || n == 0 {
            return;
        }
        let m = &mut self.counts[level];
        if let Some(c) = m.get_mut(&net) {
            *c = c.saturating_add(n);
        } else if m.len() < self.max_keys {
            m.insert(net, n);
        } else {
            self.untracked = self.untracked.saturating_add(1);
        }
    }

    /// Subtracts `n` for `ip` (a connection closed); counts reaching zero are removed.
    pub fn remove(&mut self, now: UnixTime, ip: IpAddr, n: u64) {
        self.roll(now);
        for (level, net) in networks(ip).iter().enumerate() {
            let m = &mut self.counts[level];
            if let Some(c) = m.get_mut(net) {
                *c = c.saturating_sub(n);
                if *c == 0 {
                    m.remove(net);
                }
            }
        }
    }

    /// Forgets the counts of `ip`'s networks at every level (a successful login).
    pub fn reset(&mut self, now: UnixTime, ip: IpAddr) {
        self.roll(now);
        for (level, net) in networks(ip).iter().enumerate() {
            self.counts[level].remove(net);
        }
    }

    /// Whether the count of `net` (at `level`) is known in the current window, or need not
    /// be (the level is not limited, or full).
    pub fn is_known(&mut self, now: UnixTime, level: usize, net: &Network) -> bool {
        self.roll(now);
        self.limits.0.get(level).is_none_or(|l| l.is_none())
            || self.counts[level].contains_key(net)
            || self.counts[level].len() >= self.max_keys
    }

    /// Sets the count of `net` at `level` in the current window when it is not known yet
    /// (a count kept elsewhere, e.g. loaded from storage). A zero count is remembered too,
    /// so the load is not repeated.
    pub fn load(&mut self, now: UnixTime, level: usize, net: Network, count: u64) {
        self.roll(now);
        if level >= LEVELS || self.limits.0[level].is_none() {
            return;
        }
        let m = &mut self.counts[level];
        if m.contains_key(&net) {
            return;
        }
        if m.len() < self.max_keys {
            m.insert(net, count);
        } else {
            self.untracked = self.untracked.saturating_add(1);
        }
    }

    /// Sets the count of `net` at `level` in the current window to `count`, known or not
    /// (a count shared with other processes, read again from where they all add to it).
    pub fn set(&mut self, now: UnixTime, level: usize, net: Network, count: u64) {
        self.roll(now);
        if level >= LEVELS || self.limits.0[level].is_none() {
            return;
        }
        let m = &mut self.counts[level];
        if let Some(c) = m.get_mut(&net) {
            *c = count;
        } else if m.len() < self.max_keys {
            m.insert(net, count);
        } else {
            self.untracked = self.untracked.saturating_add(1);
        }
    }

    /// Networks tracked now, all levels together.
    pub fn len(&self) -> usize {
        self.counts.iter().map(|m| m.len()).sum()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many times a network could not be tracked because its level was full.
    pub fn untracked(&self) -> u64 {
        self.untracked
    }
}

fn reply(code: u16, e: (u8, u16, u16), text: impl Into<String>) -> Reply {
    Reply::new(code, Some(Enhanced::new(e.0, e.1, e.2)), text)
}

/// Settings of [`ConnectionLimits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// Open connections per level.
    pub open: Levels,
    /// New connections per minute per level.
    pub per_minute: Levels,
    /// Failed logins per minute per IP; at the limit the IP is refused.
    pub auth_failures_per_minute: u64,
    /// Loopback addresses are exempt from every limit.
    pub exempt_loopback: bool,
    /// Networks tracked per level and window.
    pub max_keys: usize,
}

impl Default for ConnectionSettings {
    /// mox's numbers.
    fn default() -> Self {
        ConnectionSettings {
            open: Levels::new(30, 90, 270),
            per_minute: Levels::new(300, 900, 2700),
            auth_failures_per_minute: 10,
            exempt_loopback: true,
            max_keys: DEFAULT_MAX_KEYS,
        }
    }
}

/// Whether `ip` is exempt under `exempt_loopback`.
pub fn is_exempt(exempt_loopback: bool, ip: IpAddr) -> bool {
    exempt_loopback && ip.to_canonical().is_loopback()
}

/// Connection-time limits: the rate of new connections, open connections and recent
/// authentication failures per IP and network.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    exempt_loopback: bool,
    rate: Limiter,
    open: Limiter,
    auth: Limiter,
}

impl ConnectionLimits {
    /// Limits with these settings.
    pub fn new(s: ConnectionSettings) -> ConnectionLimits {
        ConnectionLimits {
            exempt_loopback: s.exempt_loopback,
            rate: Limiter::new(Window::Seconds(60), s.per_minute, s.max_keys),
            open: Limiter::new(Window::Forever, s.open, s.max_keys),
            auth: Limiter::new(
                Window::Seconds(60),
                Levels::per_ip(s.auth_failures_per_minute),
                s.max_keys,
            ),
        }
    }

    fn exempt(&self, ip: IpAddr) -> bool {
        is_exempt(self.exempt_loopback, ip)
    }

    /// A new connection from `ip`. `Ok` counts it as open (call [`Self::closed`] when it
    /// ends); `Err` is the 421 to send before closing. In order (as mox): the connection
    /// rate (a refused connection does not count), then on submission ports the recent
    /// authentication failures, then the open connections.
    pub fn connect(&mut self, now: UnixTime, ip: IpAddr, submission: bool) -> Result<(), Reply> {
        if self.exempt(ip) {
            return Ok(());
        }
        if self.rate.add(now, ip, 1).is_err() {
            return Err(reply(
                421,
                (4, 7, 0),
                "connection rate from your ip or network too high, slow down please",
            ));
        }
        if submission && self.is_auth_limited(now, ip) {
            return Err(reply(421, (4, 7, 0), "too many auth failures"));
        }
        if self.open.add(now, ip, 1).is_err() {
            return Err(reply(
                421,
                (4, 7, 0),
                "too many open connections from your ip or network",
            ));
        }
        Ok(())
    }

    /// A connection accepted by [`Self::connect`] ended.
    pub fn closed(&mut self, now: UnixTime, ip: IpAddr) {
        if !self.exempt(ip) {
            self.open.remove(now, ip, 1);
        }
    }

    /// Whether `ip` reached the failed-login limit: logins are refused, and so are new
    /// connections to submission ports.
    pub fn is_auth_limited(&mut self, now: UnixTime, ip: IpAddr) -> bool {
        !self.exempt(ip) && self.auth.check(now, ip, 1).is_err()
    }

    /// A login from `ip` failed.
    pub fn auth_failed(&mut self, now: UnixTime, ip: IpAddr) {
        if !self.exempt(ip) {
            self.auth.record(now, ip, 1);
        }
    }

    /// A login from `ip` succeeded: its failures are forgotten.
    pub fn auth_succeeded(&mut self, now: UnixTime, ip: IpAddr) {
        self.auth.reset(now, ip);
    }

    /// Networks tracked by all three limiters.
    pub fn tracked(&self) -> usize {
        self.rate.len() + self.open.len() + self.auth.len()
    }
}

/// Limits on deliveries into the server (port 25) per level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliverySettings {
    /// Messages per minute.
    pub messages_per_minute: Levels,
    /// Messages per (UTC) day.
    pub messages_per_day: Levels,
    /// Bytes per minute.
    pub bytes_per_minute: Levels,
    /// Bytes per (UTC) day.
    pub bytes_per_day: Levels,
    /// Loopback addresses are exempt.
    pub exempt_loopback: bool,
    /// Networks tracked per level and window.
    pub max_keys: usize,
}

const MIB: u64 = 1024 * 1024;

impl Default for DeliverySettings {
    /// mox's numbers: 500/1500/4500 messages per minute and 20 times that per day;
    /// 1000/3000/9000 MiB per minute and 3 times that per day.
    fn default() -> Self {
        DeliverySettings {
            messages_per_minute: Levels::new(500, 1500, 4500),
            messages_per_day: Levels::new(20 * 500, 20 * 1500, 20 * 4500),
            bytes_per_minute: Levels::new(1000 * MIB, 3000 * MIB, 9000 * MIB),
            bytes_per_day: Levels::new(3 * 1000 * MIB, 3 * 3000 * MIB, 3 * 9000 * MIB),
            exempt_loopback: true,
            max_keys: DEFAULT_MAX_KEYS,
        }
    }
}

/// Seconds in a day window.
pub const DAY: u64 = 24 * 3600;

/// The day index (UTC days since the epoch) `now` falls in: the per-day window.
pub fn day_of(now: UnixTime) -> i64 {
    Window::Seconds(DAY).index(now)
}

/// Which delivery limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryOver {
    /// Bytes (true) or messages (false).
    pub bytes: bool,
    /// Per day (true) or per minute (false).
    pub day: bool,
    /// The limit that was reached.
    pub over: Over,
}

impl DeliveryOver {
    /// The reply: `452 4.2.2` (mox's answer to a high delivery rate).
    pub fn reply(&self) -> Reply {
        let what = if self.bytes { "bytes" } else { "messages" };
        let window = if self.day { "day" } else { "minute" };
        reply(
            452,
            (4, 2, 2),
            format!(
                "more than {} {what} in past {window} from your ip/network {}, try again later",
                self.over.limit, self.over.network
            ),
        )
    }
}

/// Messages and bytes delivered per IP and network, per minute (in memory) and per UTC day
/// (in memory, loaded from and saved to storage by the caller: [`Self::missing_day`],
/// [`Self::load_day`], and the counts returned by [`Self::record`]).
#[derive(Debug, Clone)]
pub struct DeliveryLimiter {
    exempt_loopback: bool,
    minute_msgs: Limiter,
    minute_bytes: Limiter,
    day_msgs: Limiter,
    day_bytes: Limiter,
}

impl DeliveryLimiter {
    /// A limiter with these settings.
    pub fn new(s: DeliverySettings) -> DeliveryLimiter {
        let minute = Window::Seconds(60);
        let day = Window::Seconds(DAY);
        DeliveryLimiter {
            exempt_loopback: s.exempt_loopback,
            minute_msgs: Limiter::new(minute, s.messages_per_minute, s.max_keys),
            minute_bytes: Limiter::new(minute, s.bytes_per_minute, s.max_keys),
            day_msgs: Limiter::new(day, s.messages_per_day, s.max_keys),
            day_bytes: Limiter::new(day, s.bytes_per_day, s.max_keys),
        }
    }

    /// Whether `ip` is exempt (loopback, when so configured).
    pub fn is_exempt(&self, ip: IpAddr) -> bool {
        is_exempt(self.exempt_loopback, ip)
    }

    /// The networks of `ip` (with their level) whose counts for today must be loaded with
    /// [`Self::load_day`] before a check; empty when all are known.
    pub fn missing_day(&mut self, now: UnixTime, ip: IpAddr) -> Vec<(usize, Network)> {
        if self.is_exempt(ip) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (level, net) in networks(ip).into_iter().enumerate() {
            if !self.day_msgs.is_known(now, level, &net)
                || !self.day_bytes.is_known(now, level, &net)
            {
                out.push((level, net));
            }
        }
        out
    }

    /// Today's counts of `net` kept elsewhere (storage); ignored when already known.
    pub fn load_day(
        &mut self,
        now: UnixTime,
        level: usize,
        net: Network,
        messages: u64,
        bytes: u64,
    ) {
        self.day_msgs.load(now, level, net, messages);
        self.day_bytes.load(now, level, net, bytes);
    }

    /// Whether any per-day limit is set (only then do per-day counts matter).
    pub fn has_day_limits(&self) -> bool {
        self.day_msgs.limits.0.iter().any(|l| l.is_some())
            || self.day_bytes.limits.0.iter().any(|l| l.is_some())
    }

    /// Today's counts of `net` as kept elsewhere now (other servers sharing the counts add
    /// to them): replaces what is known.
    pub fn refresh_day(
        &mut self,
        now: UnixTime,
        level: usize,
        net: Network,
        messages: u64,
        bytes: u64,
    ) {
        self.day_msgs.set(now, level, net, messages);
        self.day_bytes.set(now, level, net, bytes);
    }

    /// Before a transaction (MAIL FROM): refused when one more message would exceed a
    /// message limit, or when the bytes accepted already reached a byte limit.
    pub fn check_start(&mut self, now: UnixTime, ip: IpAddr) -> Result<(), DeliveryOver> {
        self.check(now, ip, 1, 1)
    }

    /// Before storing a message of `size` octets: refused when it would exceed a limit.
    pub fn check_message(
        &mut self,
        now: UnixTime,
        ip: IpAddr,
        size: u64,
    ) -> Result<(), DeliveryOver> {
        self.check(now, ip, 1, size)
    }

    fn check(
        &mut self,
        now: UnixTime,
        ip: IpAddr,
        messages: u64,
        bytes: u64,
    ) -> Result<(), DeliveryOver> {
        if self.is_exempt(ip) {
            return Ok(());
        }
        let checks: [(&mut Limiter, u64, bool, bool); 4] = [
            (&mut self.minute_msgs, messages, false, false),
            (&mut self.day_msgs, messages, false, true),
            (&mut self.minute_bytes, bytes, true, false),
            (&mut self.day_bytes, bytes, true, true),
        ];
        for (l, n, is_bytes, is_day) in checks {
            if let Err(over) = l.check(now, ip, n) {
                return Err(DeliveryOver {
                    bytes: is_bytes,
                    day: is_day,
                    over,
                });
            }
        }
        Ok(())
    }

    /// A message of `size` octets from `ip` was accepted. Returns the day index and the
    /// networks whose per-day counts grew (by one message and `size` bytes), for the caller
    /// to add to its stored counts; empty when exempt.
    pub fn record(&mut self, now: UnixTime, ip: IpAddr, size: u64) -> (i64, Vec<Network>) {
        let day = day_of(now);
        if self.is_exempt(ip) {
            return (day, Vec::new());
        }
        self.minute_msgs.record(now, ip, 1);
        self.minute_bytes.record(now, ip, size);
        self.day_msgs.record(now, ip, 1);
        self.day_bytes.record(now, ip, size);
        let limits = [self.day_msgs.limits(), self.day_bytes.limits()];
        let nets = networks(ip)
            .into_iter()
            .enumerate()
            .filter(|(level, _)| limits.iter().any(|l| l.0[*level].is_some()))
            .map(|(_, n)| n)
            .collect();
        (day, nets)
    }

    /// Networks tracked, all windows together.
    pub fn tracked(&self) -> usize {
        self.minute_msgs.len()
            + self.minute_bytes.len()
            + self.day_msgs.len()
            + self.day_bytes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn masks() {
        let cases = [
            (
                "192.0.2.77",
                ["192.0.2.77/32", "192.0.2.64/26", "192.0.0.0/21"],
            ),
            (
                "10.255.255.255",
                ["10.255.255.255/32", "10.255.255.192/26", "10.255.248.0/21"],
            ),
            (
                "2001:db8:1:2:3:4:5:6",
                ["2001:db8:1:2::/64", "2001:db8:1::/48", "2001:db8::/32"],
            ),
            (
                "::ffff:192.0.2.77",
                ["192.0.2.77/32", "192.0.2.64/26", "192.0.0.0/21"],
            ),
            ("::1", ["::/64", "::/48", "::/32"]),
        ];
        for (a, want) in cases {
            let got: Vec<String> = networks(ip(a)).iter().map(|n| n.to_string()).collect();
            assert_eq!(got, want, "{a}");
        }
    }

    #[test]
    fn window_limits_and_expiry() {
        let mut l = Limiter::new(Window::Seconds(60), Levels::new(2, 3, 100), 100);
        let t = UnixTime(6000);
        assert!(l.add(t, ip("192.0.2.1"), 1).is_ok());
        assert!(l.add(t, ip("192.0.2.1"), 1).is_ok());
        let over = l.add(t, ip("192.0.2.1"), 1).unwrap_err();
        assert_eq!((over.level, over.limit, over.count), (0, 2, 2));
        // A neighbour in the same /26 has one left at that level.
        assert!(l.add(t, ip("192.0.2.2"), 1).is_ok());
        let over = l.add(t, ip("192.0.2.3"), 1).unwrap_err();
        assert_eq!(
            (over.level, over.network.to_string()),
            (1, "192.0.2.0/26".into())
        );
        // Outside the /26, fine.
        assert!(l.add(t, ip("192.0.2.200"), 1).is_ok());
        assert_eq!(l.count(t, ip("192.0.2.1")), [2, 3, 4]);
        // The next window starts at zero.
        let t2 = UnixTime(6060);
        assert_eq!(l.count(t2, ip("192.0.2.1")), [0, 0, 0]);
        assert!(l.add(t2, ip("192.0.2.1"), 2).is_ok());
        assert!(l.is_empty() || l.len() == 3);
    }

    #[test]
    fn forever_remove_and_reset() {
        let mut l = Limiter::new(Window::Forever, Levels::new(1, 2, 3), 100);
        let t = UnixTime(0);
        let a = ip("2001:db8::1");
        assert!(l.add(t, a, 1).is_ok());
        assert!(l.add(UnixTime(1 << 40), a, 1).is_err());
        l.remove(t, a, 1);
        assert!(l.is_empty(), "zero counts are removed");
        assert!(l.add(t, a, 1).is_ok());
        l.reset(t, a);
        assert_eq!(l.count(t, a), [0, 0, 0]);
    }

    #[test]
    fn unlimited_levels_are_not_tracked() {
        let mut l = Limiter::new(Window::Seconds(60), Levels::per_ip(5), 100);
        l.record(UnixTime(0), ip("192.0.2.1"), 3);
        assert_eq!(l.len(), 1);
        assert_eq!(l.count(UnixTime(0), ip("192.0.2.1")), [3, 0, 0]);
    }

    /// The key cap: a full level does not grow; the new network is not counted there, the
    /// coarser levels still are.
    #[test]
    fn key_cap() {
        let mut l = Limiter::new(Window::Seconds(60), Levels::new(1, 100, 3), 2);
        let t = UnixTime(0);
        assert!(l.add(t, ip("192.0.2.1"), 1).is_ok());
        assert!(l.add(t, ip("192.0.2.2"), 1).is_ok());
        // Level 0 is full: 192.0.2.3 is not tracked there (fails open) ...
        assert!(l.add(t, ip("192.0.2.3"), 1).is_ok());
        assert!(
            l.add(t, ip("192.0.2.3"), 1).is_err(),
            "the /21 limit of 3 still holds"
        );
        assert_eq!(l.count(t, ip("192.0.2.3"))[0], 0);
        assert!(l.untracked() >= 1);
        assert!(l.counts.iter().all(|m| m.len() <= 2));
    }

    #[test]
    fn connection_limits() {
        let mut c = ConnectionLimits::new(ConnectionSettings {
            open: Levels::new(2, 10, 10),
            per_minute: Levels::new(4, 10, 10),
            auth_failures_per_minute: 2,
            exempt_loopback: true,
            max_keys: 100,
        });
        let t = UnixTime(600);
        let a = ip("192.0.2.1");
        assert!(c.connect(t, a, false).is_ok());
        assert!(c.connect(t, a, false).is_ok());
        let r = c.connect(t, a, false).unwrap_err();
        assert_eq!(
            r.to_string(),
            "421 4.7.0 too many open connections from your ip or network"
        );
        c.closed(t, a);
        // The refused connection counted toward the rate (as in mox): this is the 4th.
        assert!(c.connect(t, a, false).is_ok(), "one closed, one may open");
        c.closed(t, a);
        c.closed(t, a);
        let r = c.connect(t, a, false).unwrap_err();
        assert!(
            r.to_string().starts_with("421 4.7.0 connection rate"),
            "{r}"
        );
        // Auth failures: refused at the limit, on submission only; a success resets.
        let b = ip("198.51.100.1");
        c.auth_failed(t, b);
        assert!(!c.is_auth_limited(t, b));
        c.auth_succeeded(t, b);
        c.auth_failed(t, b);
        assert!(!c.is_auth_limited(t, b), "reset by the success");
        c.auth_failed(t, b);
        assert!(c.is_auth_limited(t, b));
        let r = c.connect(t, b, true).unwrap_err();
        assert_eq!(r.to_string(), "421 4.7.0 too many auth failures");
        c.closed(t, b);
        assert!(
            c.connect(t, b, false).is_ok(),
            "port 25 is not refused for auth failures"
        );
        assert!(
            !c.is_auth_limited(UnixTime(660), b),
            "the next minute starts over"
        );
        // Loopback is exempt unless configured otherwise.
        let lo = ip("127.0.0.1");
        for _ in 0..10 {
            assert!(c.connect(t, lo, false).is_ok());
            c.auth_failed(t, lo);
        }
        assert!(!c.is_auth_limited(t, lo));
    }

    #[test]
    fn loopback_not_exempt_when_off() {
        let mut c = ConnectionLimits::new(ConnectionSettings {
            open: Levels::new(1, 10, 10),
            exempt_loopback: false,
            ..Default::default()
        });
        let lo = ip("127.0.0.1");
        assert!(c.connect(UnixTime(0), lo, false).is_ok());
        assert!(c.connect(UnixTime(0), lo, false).is_err());
    }

    /// TestRatelimitDelivery: with 1 message per minute the second is refused with 452;
    /// with room for 2.5 messages' bytes the third is refused.
    #[test]
    fn delivery_limits() {
        let t = UnixTime(86400 * 100 + 30);
        let a = ip("192.0.2.9");
        let mut d = DeliveryLimiter::new(DeliverySettings {
            messages_per_minute: Levels::new(1, 10, 10),
            exempt_loopback: false,
            ..Default::default()
        });
        assert_eq!(d.missing_day(t, a).len(), 3);
        for (level, net) in d.missing_day(t, a) {
            d.load_day(t, level, net, 0, 0);
        }
        assert!(d.missing_day(t, a).is_empty());
        assert!(d.check_start(t, a).is_ok());
        let (day, nets) = d.record(t, a, 1000);
        assert_eq!(day, 100);
        assert_eq!(nets.len(), 3);
        let over = d.check_start(t, a).unwrap_err();
        assert!(!over.bytes && !over.day);
        assert!(
            over.reply().to_string().starts_with("452 4.2.2 "),
            "{}",
            over.reply()
        );
        // The next minute: fine again.
        assert!(d.check_start(UnixTime(t.0 + 60), a).is_ok());

        let size = 1000;
        let mut d = DeliveryLimiter::new(DeliverySettings {
            bytes_per_minute: Levels::new(2 * size + size / 2, u64::MAX, u64::MAX),
            exempt_loopback: false,
            ..Default::default()
        });
        d.record(t, a, size);
        assert!(d.check_message(t, a, size).is_ok());
        d.record(t, a, size);
        assert!(
            d.check_start(t, a).is_ok(),
            "bytes not reached yet at MAIL FROM"
        );
        let over = d.check_message(t, a, size).unwrap_err();
        assert!(over.bytes && !over.day);
        d.record(t, a, size);
        assert!(
            d.check_start(t, a).is_err(),
            "limit reached: refused at MAIL FROM"
        );
    }

    /// Per-day counts loaded from storage count; the next day starts over.
    #[test]
    fn delivery_day_counts_loaded() {
        let t = UnixTime(86400 * 5 + 100);
        let a = ip("192.0.2.9");
        let mut d = DeliveryLimiter::new(DeliverySettings {
            messages_per_day: Levels::new(5, 100, 100),
            exempt_loopback: false,
            ..Default::default()
        });
        for (level, net) in d.missing_day(t, a) {
            d.load_day(t, level, net, if level == 0 { 5 } else { 0 }, 0);
        }
        let over = d.check_start(t, a).unwrap_err();
        assert!(over.day && !over.bytes);
        let tomorrow = UnixTime(86400 * 6);
        assert_eq!(d.missing_day(tomorrow, a).len(), 3);
        assert!(d.check_start(tomorrow, a).is_ok());
    }

    /// Counts shared with other servers: a refresh replaces what is known (here another
    /// server delivered 4 since the load), so the limit counts every server's messages.
    #[test]
    fn delivery_day_counts_refreshed() {
        let t = UnixTime(86400 * 5 + 100);
        let a = ip("192.0.2.9");
        let mut d = DeliveryLimiter::new(DeliverySettings {
            messages_per_day: Levels::new(5, 100, 100),
            exempt_loopback: false,
            ..Default::default()
        });
        for (level, net) in d.missing_day(t, a) {
            d.load_day(t, level, net, 0, 0);
        }
        d.record(t, a, 10);
        assert!(d.check_start(t, a).is_ok());
        // Loading again changes nothing; a refresh does.
        for (level, net) in networks(a).into_iter().enumerate() {
            d.load_day(t, level, net, 5, 50);
        }
        assert!(d.check_start(t, a).is_ok());
        for (level, net) in networks(a).into_iter().enumerate() {
            d.refresh_day(t, level, net, 5, 50);
        }
        let over = d.check_start(t, a).unwrap_err();
        assert!(over.day && !over.bytes);
        // Down again (another day's cleanup elsewhere): allowed.
        for (level, net) in networks(a).into_iter().enumerate() {
            d.refresh_day(t, level, net, 1, 10);
        }
        assert!(d.check_start(t, a).is_ok());
    }

    #[test]
    fn delivery_exempt_loopback() {
        let mut d = DeliveryLimiter::new(DeliverySettings {
            messages_per_minute: Levels::new(1, 1, 1),
            ..Default::default()
        });
        let lo = ip("::1");
        assert!(d.missing_day(UnixTime(0), lo).is_empty());
        d.record(UnixTime(0), lo, 10);
        d.record(UnixTime(0), lo, 10);
        assert!(d.check_start(UnixTime(0), lo).is_ok());
        assert_eq!(d.tracked(), 0);
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            // Few distinct addresses, so networks are shared.
            (0u32..4, 0u32..300)
                .prop_map(|(a, b)| IpAddr::V4(Ipv4Addr::from(0xC000_0000 | (a << 12) | b))),
            (0u128..4, 0u128..1 << 20).prop_map(|(a, b)| IpAddr::V6(Ipv6Addr::from(
                (0x2001_0db8u128 << 96) | (a << 72) | b << 50
            ))),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Whatever the sequence of adds and removes, no tracked count exceeds its
        /// level's limit, and the key cap holds.
        #[test]
        fn never_exceeds(
            limits in (1u64..5, 1u64..8, 1u64..12),
            max_keys in 1usize..6,
            ops in proptest::collection::vec((any_ip(), 0u64..3, any::<bool>(), 0i64..200), 1..200),
        ) {
            let lim = Levels::new(limits.0, limits.1, limits.2);
            let mut l = Limiter::new(Window::Seconds(60), lim, max_keys);
            let mut t = 0i64;
            for (a, n, add, dt) in ops {
                t += dt;
                let now = UnixTime(t);
                if add {
                    let before = l.count(now, a);
                    let r = l.add(now, a, n);
                    let after = l.count(now, a);
                    if r.is_err() {
                        prop_assert_eq!(before, after, "a refused add changes nothing");
                    }
                } else {
                    l.remove(now, a, n);
                }
                for (level, m) in l.counts.iter().enumerate() {
                    prop_assert!(m.len() <= max_keys);
                    for c in m.values() {
                        prop_assert!(*c <= lim.0[level].unwrap());
                        prop_assert!(*c > 0);
                    }
                }
            }
        }

        /// Every network of an address contains it, has the level's prefix, and equal
        /// masks mean a shared network.
        #[test]
        fn masks_contain(a in any_ip(), b in any_ip()) {
            let na = networks(a);
            let nb = networks(b);
            for level in 0..LEVELS {
                prop_assert!(na[level].contains(a));
                let want = if a.is_ipv4() { V4_PREFIXES[level] } else { V6_PREFIXES[level] };
                prop_assert_eq!(na[level].prefix(), want);
                prop_assert_eq!(na[level].contains(b), na[level] == nb[level]);
                if level > 0 && na[level - 1] == nb[level - 1] {
                    prop_assert_eq!(na[level], nb[level], "finer shared implies coarser shared");
                }
            }
        }
    }
}
