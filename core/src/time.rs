//! Time as the machines see it: passed in, never read.

use std::time::{Duration, Instant};

/// Wall-clock time in whole seconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UnixTime(pub i64);

impl UnixTime {
    /// Seconds since the epoch.
    pub fn secs(self) -> i64 {
        self.0
    }

    /// This time plus `d` (saturating).
    #[allow(clippy::should_implement_trait)]
    pub fn add(self, d: Duration) -> UnixTime {
        UnixTime(
            self.0
                .saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        )
    }

    /// Civil UTC date and time: (year, month 1-12, day 1-31, hour, minute, second, weekday 0=Sunday).
    pub fn civil(self) -> (i64, u32, u32, u32, u32, u32, u32) {
        let days = self.0.div_euclid(86_400);
        let rem = self.0.rem_euclid(86_400);
        // Howard Hinnant's days-from-civil inverse.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let y = yoe + era * 400;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let y = if m <= 2 { y + 1 } else { y };
        let weekday = (days + 4).rem_euclid(7) as u32;
        (
            y,
            m,
            d,
            (rem / 3600) as u32,
            ((rem % 3600) / 60) as u32,
            (rem % 60) as u32,
            weekday,
        )
    }

    /// Seconds since the epoch for a civil UTC date and time, `None` when out of range.
    pub fn from_civil(y: i64, m: u32, d: u32, hh: u32, mm: u32, ss: u32) -> Option<UnixTime> {
        if !(1..=12).contains(&m)
            || d == 0
            || d > days_in_month(y, m)
            || hh > 23
            || mm > 59
            || ss > 60
        {
            return None;
        }
        let y2 = if m <= 2 { y - 1 } else { y };
        let era = y2.div_euclid(400);
        let yoe = y2.rem_euclid(400);
        let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
        let doy = (153 * mp + 2) / 5 + d as i64 - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        Some(UnixTime(days * 86_400 + (hh * 3600 + mm * 60 + ss) as i64))
    }

    /// RFC 5322 date-time in UTC, e.g. `Sun, 22 Nov 2026 02:41:08 +0000`.
    pub fn rfc5322(self) -> String {
        const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let (y, m, d, hh, mm, ss, wd) = self.civil();
        format!(
            "{}, {} {} {} {:02}:{:02}:{:02} +0000",
            DAYS[wd as usize],
            d,
            MONTHS[(m - 1) as usize],
            y,
            hh,
            mm,
            ss
        )
    }

    /// RFC 3339 in UTC, e.g. `2026-11-22T02:41:08Z`.
    pub fn rfc3339(self) -> String {
        let (y, m, d, hh, mm, ss, _) = self.civil();
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
    }

    /// Parses RFC 3339 (`2026-11-22T02:41:08Z`, `...+01:00`, fractional seconds ignored).
    pub fn parse_rfc3339(s: &str) -> Option<UnixTime> {
        let b = s.as_bytes();
        if b.len() < 20
            || b[4] != b'-'
            || b[7] != b'-'
            || !matches!(b[10], b'T' | b't')
            || b[13] != b':'
            || b[16] != b':'
        {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<u32> {
            let t = s.get(r)?;
            if !t.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            t.parse().ok()
        };
        let (y, mo, d, h, mi, se) = (
            num(0..4)?,
            num(5..7)?,
            num(8..10)?,
            num(11..13)?,
            num(14..16)?,
            num(17..19)?,
        );
        let mut rest = &s[19..];
        if let Some(r) = rest.strip_prefix('.') {
            let n = r.bytes().take_while(|c| c.is_ascii_digit()).count();
            if n == 0 {
                return None;
            }
            rest = &r[n..];
        }
        let offset: i64 = match rest {
            "Z" | "z" => 0,
            _ => {
                let rb = rest.as_bytes();
                if rb.len() != 6 || rb[3] != b':' || !matches!(rb[0], b'+' | b'-') {
                    return None;
                }
                let oh: i64 = rest.get(1..3)?.parse().ok()?;
                let om: i64 = rest.get(4..6)?.parse().ok()?;
                if oh > 23 || om > 59 {
                    return None;
                }
                let o = oh * 3600 + om * 60;
                if rb[0] == b'-' {
                    -o
                } else {
                    o
                }
            }
        };
        let t = UnixTime::from_civil(i64::from(y), mo, d, h, mi, se)?;
        Some(UnixTime(t.0 - offset))
    }
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// The current time, handed to every machine call: a monotonic instant for timeouts and
/// wall time for headers and schedules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time, for deadlines.
    pub mono: Instant,
    /// Wall-clock time, for headers, schedules and policies.
    pub wall: UnixTime,
}

impl Now {
    /// `self` advanced by `d` on both clocks (virtual time in tests and simulations).
    pub fn advance(self, d: Duration) -> Now {
        Now {
            mono: self.mono + d,
            wall: self.wall.add(d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for t in [
            0i64,
            86_399,
            951_782_400,
            1_795_315_268,
            4_102_444_800,
            -86_400,
        ] {
            let (y, m, d, hh, mm, ss, _) = UnixTime(t).civil();
            assert_eq!(
                UnixTime::from_civil(y, m, d, hh, mm, ss),
                Some(UnixTime(t)),
                "{t}"
            );
        }
    }

    #[test]
    fn formats() {
        let t = UnixTime(1_795_315_268);
        assert_eq!(t.rfc3339(), "2026-11-22T02:41:08Z");
        assert_eq!(t.rfc5322(), "Sun, 22 Nov 2026 02:41:08 +0000");
        assert_eq!(UnixTime::parse_rfc3339("2026-11-22T02:41:08Z"), Some(t));
        assert_eq!(
            UnixTime::parse_rfc3339("2026-11-22T03:41:08.123+01:00"),
            Some(t)
        );
        assert_eq!(UnixTime::parse_rfc3339("2026-02-30T00:00:00Z"), None);
        assert_eq!(UnixTime::parse_rfc3339("2026-11-22 02:41:08Z"), None);
    }
}
