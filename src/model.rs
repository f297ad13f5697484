//! Plain domain data shared by every room: time, durations, states and causes.
//!
//! Invariant: a [`Timestamp`] and a [`Span`] are whole milliseconds in an `i64`, stored as such
//! in both ledger backends, so ordering and arithmetic are exact and the same everywhere; adding
//! a span saturates (a huge grace period means "never", not an overflow).

use std::fmt;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// A point in time, in milliseconds since the Unix epoch (UTC).
///
/// Stored as a plain integer in both ledger backends, so ordering and arithmetic are exact and
/// identical everywhere; shown as RFC 3339.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const MAX: Timestamp = Timestamp(i64::MAX);

    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }
    pub const fn millis(self) -> i64 {
        self.0
    }
    /// `self + span`, saturating: a huge grace period means "never", not an overflow.
    pub fn plus(self, span: Span) -> Timestamp {
        Timestamp(self.0.saturating_add(span.0))
    }
    pub fn minus(self, span: Span) -> Timestamp {
        Timestamp(self.0.saturating_sub(span.0))
    }
    pub fn to_datetime(self) -> Option<DateTime<Utc>> {
        Utc.timestamp_millis_opt(self.0).single()
    }
    /// RFC 3339 in UTC with a `Z` suffix, e.g. `2026-11-27T10:00:00Z`.
    pub fn rfc3339(self) -> String {
        match self.to_datetime() {
            Some(dt) => dt.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            None => format!("@{}ms", self.0),
        }
    }
    /// Parses an RFC 3339 timestamp; the error names the bad value.
    pub fn parse_rfc3339(s: &str) -> Result<Self, String> {
        DateTime::parse_from_rfc3339(s)
            .map(|dt| Timestamp(dt.with_timezone(&Utc).timestamp_millis()))
            .map_err(|e| format!("`{s}` is not an RFC 3339 timestamp ({e})"))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.rfc3339())
    }
}

/// A non-negative length of time in milliseconds (grace periods, retention limits, skews).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Span(i64);

impl Span {
    pub const ZERO: Span = Span(0);

    pub const fn from_secs(s: i64) -> Self {
        Span(s.saturating_mul(1000))
    }
    pub const fn from_millis(ms: i64) -> Self {
        Span(ms)
    }
    pub const fn millis(self) -> i64 {
        self.0
    }
    pub fn as_std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0.max(0) as u64)
    }
    /// Parses a humantime string such as `30d`, `90s` or `0s`; the error names the value.
    pub fn parse(s: &str) -> Result<Self, String> {
        let d = humantime::parse_duration(s)
            .map_err(|e| format!("`{s}` is not a duration like \"30d\" or \"90s\" ({e})"))?;
        let ms =
            i64::try_from(d.as_millis()).map_err(|_| format!("`{s}` is too long a duration"))?;
        // Ten thousand years is far beyond any retention policy and keeps timestamp maths exact.
        if ms > 10_000 * 366 * 86_400_000 {
            return Err(format!(
                "`{s}` is too long a duration (at most 10000 years)"
            ));
        }
        Ok(Span(ms))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = std::time::Duration::from_millis(self.0.max(0) as u64);
        const DAY: i64 = 86_400_000;
        if self.0 == 0 {
            f.write_str("0s")
        } else if self.0 % DAY == 0 && self.0 > 0 {
            // Whole days as days: humantime would say "2months 29days 2h 52m 48s" for 90d.
            match self.0 / DAY {
                1 => f.write_str("1day"),
                n => write!(f, "{n}days"),
            }
        } else {
            write!(f, "{}", humantime::format_duration(d))
        }
    }
}

impl Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Span::parse(&s).map_err(serde::de::Error::custom)
    }
}

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }
        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result { f.write_str(self.as_str()) }
        }
        impl ::std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> ::std::result::Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!(
                        "`{}` is not a valid {} (expected one of: {})",
                        s,
                        stringify!($name),
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> ::std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> ::std::result::Result<Self, D::Error> {
                let s = <String as ::serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(::serde::de::Error::custom)
            }
        }
    };
}

pub(crate) use string_enum;

string_enum!(
    /// Where a resource is in its life (§2).
    ResourceState {
        Live => "live",
        Deleted => "deleted",
        Purging => "purging",
        Purged => "purged",
        Failed => "failed",
        Interrupted => "interrupted",
    }
);

string_enum!(
    /// Why a resource was deleted or purged (§2).
    Cause {
        Manual => "manual",
        Account => "account",
        Expired => "expired",
        Zdr => "zdr",
    }
);

string_enum!(
    /// Where an account is in its life (§2).
    AccountState {
        Active => "active",
        DeletionRequested => "deletion_requested",
        Purged => "purged",
    }
);

string_enum!(
    /// An organisation's plan (§2).
    Plan {
        Free => "free",
        Scale => "scale",
    }
);

string_enum!(
    /// An organisation's Zero Data Retention status (§2, R6).
    ZdrStatus {
        Off => "off",
        Requested => "requested",
        Approved => "approved",
        Denied => "denied",
    }
);

string_enum!(
    /// The lifecycle rule that set a resource's `purge_after` (§3).
    Rule {
        ManualDelete => "R1",
        AccountDelete => "R2",
        RetentionLimit => "R5",
        Zdr => "R6",
    }
);

impl Rule {
    /// The cause recorded when a purge happens because of this rule.
    pub fn cause(self) -> Cause {
        match self {
            Rule::ManualDelete => Cause::Manual,
            Rule::AccountDelete => Cause::Account,
            Rule::RetentionLimit => Cause::Expired,
            Rule::Zdr => Cause::Zdr,
        }
    }
    pub fn describe(self) -> &'static str {
        match self {
            Rule::ManualDelete => "R1 manual deletion + kind grace_after_delete",
            Rule::AccountDelete => "R2 account deletion + kind grace_after_account_delete",
            Rule::RetentionLimit => "R5 created_at + kind max_age",
            Rule::Zdr => "R6 zero data retention: due at once",
        }
    }
}

/// Checks an application identifier (resource, account, org): non-empty, at most 512 bytes,
/// no control characters. Returns the reason when it is not acceptable.
pub fn check_id(what: &str, id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if id.len() > 512 {
        return Err(format!("{what} is longer than 512 bytes"));
    }
    if id.chars().any(char::is_control) {
        return Err(format!("{what} contains a control character"));
    }
    Ok(())
}

/// One resource to purge, with everything a statement, path, key or URL may refer to.
#[derive(Debug, Clone, Default)]
pub struct PurgeItem {
    pub id: String,
    pub kind: String,
    pub account: String,
    pub org: String,
    /// The `resource.created` attributes the config's templates name (`{attrs.NAME}`).
    pub attrs: std::collections::BTreeMap<String, String>,
}

impl PurgeItem {
    /// The item of an account-level purge.
    pub fn account(account: &str, org: &str) -> PurgeItem {
        PurgeItem {
            kind: "account".into(),
            account: account.to_string(),
            org: org.to_string(),
            ..PurgeItem::default()
        }
    }

    /// A statement parameter (`:id` …); unknown names are empty.
    pub fn param(&self, name: &str) -> &str {
        match name {
            "id" => &self.id,
            "kind" => &self.kind,
            "account" => &self.account,
            "org" => &self.org,
            _ => "",
        }
    }

    /// A template placeholder's value: `id`, `kind`, `account`, `org` or `attrs.NAME`. A
    /// missing attribute is an error naming it, never an empty value (that could name another
    /// object: a prefix, a folder, a collection).
    pub fn placeholder(&self, name: &str) -> Result<&str, String> {
        match name.strip_prefix("attrs.") {
            Some(a) => self.attrs.get(a).map(String::as_str).ok_or_else(|| {
                format!("attribute `{a}` ({{{name}}}) is missing from resource `{}`'s attrs (resource.created)", self.id)
            }),
            None => Ok(self.param(name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_rfc3339() {
        let t = Timestamp::parse_rfc3339("2026-11-27T10:00:00Z").unwrap();
        assert_eq!(t.rfc3339(), "2026-11-27T10:00:00Z");
        let t = Timestamp::parse_rfc3339("2026-11-27T11:00:00.250+01:00").unwrap();
        assert_eq!(t.rfc3339(), "2026-11-27T10:00:00.250Z");
        assert!(Timestamp::parse_rfc3339("99999-01-01T00:00:00Z").is_err());
    }

    #[test]
    fn spans_parse_humantime_and_reject_nonsense() {
        assert_eq!(Span::parse("30d").unwrap(), Span::from_secs(30 * 86400));
        assert_eq!(Span::parse("0s").unwrap(), Span::ZERO);
        assert!(Span::parse("30x").unwrap_err().contains("`30x`"));
        assert!(Span::parse("-1s").is_err());
        assert!(Span::parse("99999999999999999999d").is_err());
        assert!(Span::parse("20000y").is_err());
        assert_eq!(Span::parse("90s").unwrap().to_string(), "1m 30s");
        // Whole days print as days (and parse back), not as humantime's 30.44-day months.
        for (text, shown) in [
            ("1d", "1day"),
            ("30d", "30days"),
            ("90d", "90days"),
            ("36h", "1day 12h"),
        ] {
            let span = Span::parse(text).unwrap();
            assert_eq!(span.to_string(), shown);
            assert_eq!(Span::parse(shown).unwrap(), span);
        }
    }

    #[test]
    fn timestamp_arithmetic_saturates() {
        assert_eq!(Timestamp::MAX.plus(Span(5)), Timestamp::MAX);
        assert_eq!(Timestamp(i64::MIN).minus(Span(5)), Timestamp(i64::MIN));
    }
}
