//! Windowed kinds (issue 29): which rows of an application's log table a pass deletes, as plain
//! data and as the SQL that says the same. No I/O; `now` is an argument.
//!
//! Invariant: a row is deleted only when it is due — older than its org's window or else the
//! kind's (W1, W4), or covered by its org's approved ZDR (W5) — and no active hold that can
//! concern the kind matches it (W2); the SQL rendered for a plan and [`WindowPlan::deletes`]
//! agree on every row.
//!
//! Mechanism: [`plan`] turns the kind's policy, the orgs' own windows, the ZDR orgs and the
//! active holds into a [`WindowPlan`]. [`render`] writes a plan's predicate over a
//! [`WindowMapping`]'s columns: identifiers are checked to be plain words ([`Ident`]) and then
//! quoted, every value is bound, never spliced. Holds' created ranges are widened by one second
//! on each side, so the rounding of a timestamp in the application's table never lets a row at
//! a range's edge go. A property test runs the rendered SQL against a real SQLite table and
//! compares it with the plan row by row.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::SecondsFormat;
use serde::{Deserialize, Serialize};

use crate::holds::ActiveHold;
use crate::model::{Span, Timestamp};

/// How a kind's data is tracked: one ledger row per item (events), or by time window in the
/// application's own table (no events, no ledger rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tracking {
    #[default]
    Item,
    Window,
}

impl Tracking {
    pub fn is_item(&self) -> bool {
        *self == Tracking::Item
    }
}

/// How the `created_at` column stores time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// RFC 3339 text in UTC (`2026-12-01T10:00:00Z`, `…00.123Z`), compared as text.
    Rfc3339,
    /// Whole seconds since the epoch.
    Unix,
    /// Milliseconds since the epoch.
    UnixMs,
    /// PostgreSQL `timestamptz` (or `timestamp`, read as UTC).
    Native,
}

impl fmt::Display for TimeFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeFormat::Rfc3339 => "rfc3339",
            TimeFormat::Unix => "unix",
            TimeFormat::UnixMs => "unix_ms",
            TimeFormat::Native => "native",
        })
    }
}

/// An SQL identifier that is a plain word (ASCII letters, digits and `_`, not starting with a
/// digit, at most 63 bytes), so that quoting it makes it safe in any statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident(String);

impl Ident {
    pub fn parse(s: &str) -> Result<Ident, String> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !s.as_bytes()[0].is_ascii_digit();
        if ok {
            Ok(Ident(s.to_string()))
        } else {
            Err(format!(
                "`{s}` is not a plain SQL name (letters, digits and _, not starting with a digit)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name in double quotes (standard SQL, PostgreSQL).
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }

    /// The name quoted for `dialect`. SQLite gets backquotes: a double-quoted name that is no
    /// column is read there as a string literal, so a mapping naming a missing column would
    /// compare text instead of failing.
    pub fn quote(&self, dialect: Dialect) -> String {
        match dialect {
            Dialect::Sqlite => format!("`{}`", self.0),
            Dialect::Postgres => self.quoted(),
        }
    }
}

/// A table, optionally in a schema (`schema.table`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: Option<Ident>,
    pub name: Ident,
}

impl TableName {
    pub fn parse(s: &str) -> Result<TableName, String> {
        match s.split_once('.') {
            Some((schema, name)) => Ok(TableName {
                schema: Some(Ident::parse(schema)?),
                name: Ident::parse(name)?,
            }),
            None => Ok(TableName {
                schema: None,
                name: Ident::parse(s)?,
            }),
        }
    }

    pub fn quoted(&self) -> String {
        self.quote(Dialect::Postgres)
    }

    pub fn quote(&self, dialect: Dialect) -> String {
        match &self.schema {
            Some(s) => format!("{}.{}", s.quote(dialect), self.name.quote(dialect)),
            None => self.name.quote(dialect),
        }
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{}.{}", s.0, self.name.0),
            None => f.write_str(&self.name.0),
        }
    }
}

/// `[targets.T.windows.K]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWindowMapping {
    pub table: String,
    pub created_at: String,
    pub time_format: Option<TimeFormat>,
    pub org: String,
    pub account: String,
    pub endpoint: Option<String>,
    pub id: Option<String>,
    pub batch: Option<usize>,
    #[serde(default)]
    pub partitioned: bool,
}

/// How a target's table maps to the model of a windowed kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowMapping {
    pub table: TableName,
    pub created_at: Ident,
    pub time_format: TimeFormat,
    pub org: Ident,
    pub account: Ident,
    pub endpoint: Option<Ident>,
    pub id: Option<Ident>,
    /// Rows per DELETE statement (each its own transaction).
    pub batch: usize,
    /// PostgreSQL: drop whole range partitions past the cutoff (W3).
    pub partitioned: bool,
}

pub const DEFAULT_BATCH: usize = 10_000;

impl RawWindowMapping {
    /// Checks the mapping for a target on PostgreSQL or SQLite and a kind with or without ZDR;
    /// an error is (the key under the mapping, what is wrong).
    pub fn build(self, postgres: bool, zdr: bool) -> Result<WindowMapping, (String, String)> {
        let ident = |key: &str, v: &str| Ident::parse(v).map_err(|m| (key.to_string(), m));
        let time_format = self.time_format.unwrap_or(if postgres {
            TimeFormat::Native
        } else {
            TimeFormat::Rfc3339
        });
        if time_format == TimeFormat::Native && !postgres {
            return Err((
                "time_format".into(),
                "\"native\" is for PostgreSQL timestamptz columns; on SQLite use \"rfc3339\", \"unix\" or \"unix_ms\"".into(),
            ));
        }
        if self.partitioned && !postgres {
            return Err((
                "partitioned".into(),
                "partitions are a PostgreSQL feature; this target is SQLite".into(),
            ));
        }
        if zdr && self.endpoint.is_none() {
            return Err((
                "endpoint".into(),
                "missing: the kind has zdr = true, so the column holding the endpoint is required"
                    .into(),
            ));
        }
        let batch = self.batch.unwrap_or(DEFAULT_BATCH);
        if batch == 0 || batch > 1_000_000 {
            return Err((
                "batch".into(),
                format!("{batch} is out of range 1..=1000000"),
            ));
        }
        Ok(WindowMapping {
            table: TableName::parse(&self.table).map_err(|m| ("table".to_string(), m))?,
            created_at: ident("created_at", &self.created_at)?,
            time_format,
            org: ident("org", &self.org)?,
            account: ident("account", &self.account)?,
            endpoint: self
                .endpoint
                .as_deref()
                .map(|v| ident("endpoint", v))
                .transpose()?,
            id: self.id.as_deref().map(|v| ident("id", v)).transpose()?,
            batch,
            partitioned: self.partitioned,
        })
    }
}

impl WindowMapping {
    /// Every mapped column, for checking them against the live table.
    pub fn columns(&self) -> Vec<&Ident> {
        let mut c = vec![&self.created_at, &self.org, &self.account];
        c.extend(self.endpoint.iter());
        c.extend(self.id.iter());
        c
    }
}

/// A windowed kind's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowPolicy {
    pub max_age: Span,
    /// `Some(endpoints)` when ZDR covers the kind.
    pub zdr_endpoints: Option<BTreeSet<String>>,
}

/// An org whose ZDR is approved, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZdrOrg {
    pub org: String,
    pub approved_at: Timestamp,
}

/// What one active hold keeps of a windowed kind: the §4 criteria on the mapped columns, all
/// of which must match (`None`: any). `from`/`to` are already widened (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub hold: i64,
    pub org: Option<String>,
    pub account: Option<String>,
    pub id: Option<String>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
}

/// Why a row goes: its org's ZDR, its age, or its account's purge (W6).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    Zdr(String),
    Age,
    Account(String),
}

/// What a pass over one windowed kind deletes, at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowPlan {
    /// Rows created before it are due, unless their org has its own window.
    pub cutoff: Timestamp,
    /// Orgs with their own window (W4) and their cutoffs, by org.
    pub org_cutoffs: BTreeMap<String, Timestamp>,
    /// Orgs whose covered rows are due whatever their age (W5), and the covered endpoints.
    pub zdr_orgs: Vec<String>,
    pub zdr_endpoints: Vec<String>,
    pub kept: Vec<Kept>,
}

/// The columns of one row, for [`WindowPlan::deletes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowRow {
    pub org: String,
    pub account: String,
    pub endpoint: Option<String>,
    pub id: Option<String>,
    pub created_at: Timestamp,
}

/// The plan of a pass over `kind` at `now`. `org_windows` are the orgs' own `max_age`s;
/// `has_id` says whether the mapping names an id column (without one, a hold naming a resource
/// concerns items, unless it also names this kind: then it keeps by its other criteria).
pub fn plan(
    kind: &str,
    policy: &WindowPolicy,
    org_windows: &BTreeMap<String, Span>,
    zdr_orgs: &[ZdrOrg],
    holds: &[ActiveHold],
    has_id: bool,
    now: Timestamp,
) -> WindowPlan {
    let widen = Span::from_secs(1);
    let kept = holds
        .iter()
        .filter_map(|h| {
            let s = &h.scope;
            if s.kind.as_deref().is_some_and(|k| k != kind) {
                return None;
            }
            let id = match (&s.resource, has_id) {
                (Some(r), true) => Some(r.clone()),
                (Some(_), false) if s.kind.is_none() => return None,
                _ => None,
            };
            Some(Kept {
                hold: h.id,
                org: s.org.clone(),
                account: s.account.clone(),
                id,
                from: s.created_from.map(|t| t.minus(widen)),
                to: s.created_to.map(|t| t.plus(widen)),
            })
        })
        .collect();
    let (zdr_orgs, zdr_endpoints) = match &policy.zdr_endpoints {
        Some(e) if !e.is_empty() => (
            zdr_orgs.iter().map(|z| z.org.clone()).collect(),
            e.iter().cloned().collect(),
        ),
        _ => (Vec::new(), Vec::new()),
    };
    WindowPlan {
        cutoff: now.minus(policy.max_age),
        org_cutoffs: org_windows
            .iter()
            .map(|(o, s)| (o.clone(), now.minus(*s)))
            .collect(),
        zdr_orgs,
        zdr_endpoints,
        kept,
    }
}

impl Kept {
    fn matches(&self, r: &WindowRow) -> bool {
        self.org.as_deref().is_none_or(|o| o == r.org)
            && self.account.as_deref().is_none_or(|a| a == r.account)
            && self
                .id
                .as_deref()
                .is_none_or(|i| r.id.as_deref() == Some(i))
            && self.from.is_none_or(|f| r.created_at >= f)
            && self.to.is_none_or(|t| r.created_at <= t)
    }
}

impl WindowPlan {
    /// The reasons a pass deletes for, in the order it runs them (ZDR first, so what it finds
    /// there is counted apart).
    pub fn reasons(&self) -> Vec<Reason> {
        let mut r: Vec<Reason> = self.zdr_orgs.iter().cloned().map(Reason::Zdr).collect();
        r.push(Reason::Age);
        r
    }

    pub fn due(&self, r: &WindowRow, reason: &Reason) -> bool {
        match reason {
            Reason::Age => r.created_at < *self.org_cutoffs.get(&r.org).unwrap_or(&self.cutoff),
            Reason::Zdr(org) => {
                r.org == *org
                    && r.endpoint
                        .as_ref()
                        .is_some_and(|e| self.zdr_endpoints.contains(e))
            }
            Reason::Account(a) => r.account == *a,
        }
    }

    /// The holds that keep a row.
    pub fn kept_by(&self, r: &WindowRow) -> Vec<i64> {
        self.kept
            .iter()
            .filter(|k| k.matches(r))
            .map(|k| k.hold)
            .collect()
    }

    /// Whether a pass deletes the row for `reason`.
    pub fn deletes(&self, r: &WindowRow, reason: &Reason) -> bool {
        self.due(r, reason) && !self.kept.iter().any(|k| k.matches(r))
    }
}

/// A range partition's bounds on `created_at` (W3): it holds the rows with `from <= created_at <
/// to`; `None` is `MINVALUE` / `MAXVALUE`. Bounds that a time format stores inexactly are
/// widened by the caller, never narrowed: `from` rounds down and `to` rounds up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionRange {
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
}

/// What a pass does with one range partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionFate {
    /// No row it can hold is due by age: no DELETE is sent to it.
    Young,
    /// Some of its rows may be due: deleted in batches.
    Batches,
    /// Every row it can ever hold is due, and no active hold's created range reaches it: it is
    /// dropped whole.
    Drop,
    /// Every row it can hold is due, but these holds' created ranges reach it: it is dropped
    /// only if none of them keeps a row of it (counted in the table), else batched.
    DropUnlessKept(Vec<i64>),
}

/// One value of a partition bound as `pg_get_expr(relpartbound, oid)` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundValue {
    MinValue,
    MaxValue,
    /// A literal, unquoted: `2026-12-01 00:00:00+00`, `1700000000`.
    Literal(String),
}

/// Parses `FOR VALUES FROM (a) TO (b)` of a single-column range partition; `None` for
/// anything else (`DEFAULT`, list or hash bounds, several columns).
pub fn parse_range_bound(expr: &str) -> Option<(BoundValue, BoundValue)> {
    let rest = expr.trim().strip_prefix("FOR VALUES FROM (")?;
    let (from, rest) = bound_value(rest)?;
    let rest = rest.strip_prefix(") TO (")?;
    let (to, rest) = bound_value(rest)?;
    (rest == ")").then_some((from, to))
}

/// One bound value at the start of `s`, and what follows it.
fn bound_value(s: &str) -> Option<(BoundValue, &str)> {
    if let Some(rest) = s.strip_prefix("MINVALUE") {
        return Some((BoundValue::MinValue, rest));
    }
    if let Some(rest) = s.strip_prefix("MAXVALUE") {
        return Some((BoundValue::MaxValue, rest));
    }
    if let Some(body) = s.strip_prefix('\'') {
        // A quoted literal: '' is a quote inside it.
        let mut out = String::new();
        let mut chars = body.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if chars.peek().is_some_and(|(_, n)| *n == '\'') {
                    out.push('\'');
                    chars.next();
                } else {
                    return Some((BoundValue::Literal(out), &body[i + 1..]));
                }
            } else {
                out.push(c);
            }
        }
        return None;
    }
    // An unquoted number.
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '-' || c == '.'))
        .unwrap_or(s.len());
    (end > 0).then(|| (BoundValue::Literal(s[..end].to_string()), &s[end..]))
}

impl WindowPlan {
    /// The earliest cutoff of any org: a row created before it is due by age whatever its org.
    pub fn earliest_cutoff(&self) -> Timestamp {
        self.org_cutoffs
            .values()
            .copied()
            .fold(self.cutoff, std::cmp::min)
    }

    /// The latest cutoff of any org: a row created at or after it is due by age for no org.
    pub fn latest_cutoff(&self) -> Timestamp {
        self.org_cutoffs
            .values()
            .copied()
            .fold(self.cutoff, std::cmp::max)
    }

    /// What a pass does with a range partition by age (W3). `droppable`: the mapping allows
    /// dropping (`partitioned = true`) and the partition is a direct one of the table.
    pub fn partition_fate(&self, range: &PartitionRange, droppable: bool) -> PartitionFate {
        if range.from.is_some_and(|f| f >= self.latest_cutoff()) {
            return PartitionFate::Young;
        }
        let all_due = range.to.is_some_and(|t| t <= self.earliest_cutoff());
        if !droppable || !all_due {
            return PartitionFate::Batches;
        }
        let reaching: Vec<i64> = self
            .kept
            .iter()
            .filter(|k| {
                // The hold's created range [from, to] meets [range.from, range.to).
                k.from.is_none_or(|f| range.to.is_none_or(|t| f < t))
                    && k.to.is_none_or(|t| range.from.is_none_or(|f| t >= f))
            })
            .map(|k| k.hold)
            .collect();
        if reaching.is_empty() {
            PartitionFate::Drop
        } else {
            PartitionFate::DropUnlessKept(reaching)
        }
    }
}

/// The SQL dialect of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A value bound to a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    Text(String),
    Int(i64),
}

/// A statement and its bound values, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sql {
    pub text: String,
    pub binds: Vec<Bind>,
}

/// How a bound time compares with the column, for formats that round.
#[derive(Clone, Copy)]
enum Round {
    Up,
    Down,
}

struct Render<'a> {
    m: &'a WindowMapping,
    dialect: Dialect,
    binds: Vec<Bind>,
}

impl Render<'_> {
    fn bind(&mut self, b: Bind) -> String {
        self.binds.push(b);
        match self.dialect {
            Dialect::Sqlite => "?".into(),
            Dialect::Postgres => format!("${}", self.binds.len()),
        }
    }

    fn text(&mut self, v: &str) -> String {
        self.bind(Bind::Text(v.to_string()))
    }

    /// A time in the column's format. `Up`: the smallest stored value not before `t`; `Down`:
    /// the largest not after it (whole seconds round; the others are exact to the ms).
    fn time(&mut self, t: Timestamp, round: Round) -> String {
        match self.m.time_format {
            TimeFormat::Unix => {
                let ms = t.millis();
                let s = match round {
                    Round::Up => ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) != 0),
                    Round::Down => ms.div_euclid(1000),
                };
                self.bind(Bind::Int(s))
            }
            TimeFormat::UnixMs => self.bind(Bind::Int(t.millis())),
            TimeFormat::Rfc3339 => {
                let v = rfc3339_ms(t);
                self.bind(Bind::Text(v))
            }
            TimeFormat::Native => {
                let v = rfc3339_ms(t);
                let p = self.bind(Bind::Text(v));
                format!("{p}::timestamptz")
            }
        }
    }

    fn col(&self, c: &Ident) -> String {
        c.quote(self.dialect)
    }

    /// `created_at < t`.
    fn before(&mut self, t: Timestamp) -> String {
        let v = self.time(t, Round::Up);
        format!("{} < {v}", self.col(&self.m.created_at))
    }

    fn due(&mut self, plan: &WindowPlan, reason: &Reason) -> String {
        let org = self.col(&self.m.org);
        match reason {
            Reason::Age => {
                let mut parts = Vec::new();
                let base = self.before(plan.cutoff);
                if plan.org_cutoffs.is_empty() {
                    parts.push(base);
                } else {
                    let list: Vec<String> = plan.org_cutoffs.keys().map(|o| self.text(o)).collect();
                    parts.push(format!("({base} AND {org} NOT IN ({}))", list.join(", ")));
                    for (o, c) in &plan.org_cutoffs {
                        let ov = self.text(o);
                        let b = self.before(*c);
                        parts.push(format!("({org} = {ov} AND {b})"));
                    }
                }
                format!("({})", parts.join(" OR "))
            }
            Reason::Zdr(o) => {
                let Some(endpoint) = self.m.endpoint.as_ref().map(|e| self.col(e)) else {
                    return "(1 = 0)".into();
                };
                if plan.zdr_endpoints.is_empty() {
                    return "(1 = 0)".into();
                }
                let ov = self.text(o);
                let list: Vec<String> = plan.zdr_endpoints.iter().map(|e| self.text(e)).collect();
                format!("({org} = {ov} AND {endpoint} IN ({}))", list.join(", "))
            }
            Reason::Account(a) => {
                let v = self.text(a);
                format!("({} = {v})", self.col(&self.m.account))
            }
        }
    }

    fn kept_one(&mut self, k: &Kept) -> String {
        let mut parts = Vec::new();
        if let Some(o) = &k.org {
            let v = self.text(o);
            parts.push(format!("{} = {v}", self.col(&self.m.org)));
        }
        if let Some(a) = &k.account {
            let v = self.text(a);
            parts.push(format!("{} = {v}", self.col(&self.m.account)));
        }
        if let (Some(i), Some(c)) = (&k.id, &self.m.id) {
            let v = self.text(i);
            parts.push(format!("{} = {v}", self.col(c)));
        }
        if let Some(f) = k.from {
            let v = self.time(f, Round::Up);
            parts.push(format!("{} >= {v}", self.col(&self.m.created_at)));
        }
        if let Some(t) = k.to {
            let v = self.time(t, Round::Down);
            parts.push(format!("{} <= {v}", self.col(&self.m.created_at)));
        }
        if parts.is_empty() {
            "(1 = 1)".into()
        } else {
            format!("({})", parts.join(" AND "))
        }
    }

    /// Some hold keeps the row: `(k1 OR k2 …)`, or `None` without holds.
    fn kept(&mut self, plan: &WindowPlan) -> Option<String> {
        if plan.kept.is_empty() {
            return None;
        }
        let parts: Vec<String> = plan.kept.iter().map(|k| self.kept_one(k)).collect();
        Some(format!("({})", parts.join(" OR ")))
    }

    /// Due for one of `reasons` and kept by no hold.
    fn deletable(&mut self, plan: &WindowPlan, reasons: &[Reason]) -> String {
        let due: Vec<String> = reasons.iter().map(|r| self.due(plan, r)).collect();
        let due = format!("({})", due.join(" OR "));
        match self.kept(plan) {
            Some(k) => format!("{due} AND NOT {k}"),
            None => due,
        }
    }

    fn finish(self, text: String) -> Sql {
        Sql {
            text,
            binds: self.binds,
        }
    }
}

/// `t` as RFC 3339 in UTC with milliseconds (`…T10:00:00.000Z`): compared as text with values
/// of the same form it orders like time; see the module doc for other forms.
pub fn rfc3339_ms(t: Timestamp) -> String {
    match t.to_datetime() {
        Some(dt) => dt.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => t.rfc3339(),
    }
}

/// The statements of a pass over one table (or one partition of it: `table` overrides the
/// mapping's).
pub fn render(m: &WindowMapping, dialect: Dialect) -> Renderer<'_> {
    Renderer {
        m,
        dialect,
        table: m.table.quote(dialect),
    }
}

/// Renders a pass's statements for one table.
pub struct Renderer<'a> {
    m: &'a WindowMapping,
    dialect: Dialect,
    table: String,
}

impl<'a> Renderer<'a> {
    /// The same statements for another table (a partition), already quoted.
    pub fn on_table(mut self, quoted: String) -> Self {
        self.table = quoted;
        self
    }

    fn start(&self) -> Render<'a> {
        Render {
            m: self.m,
            dialect: self.dialect,
            binds: Vec::new(),
        }
    }

    /// Deletes up to `limit` rows that `plan` deletes for `reason`, oldest first.
    pub fn delete_batch(&self, plan: &WindowPlan, reason: &Reason, limit: usize) -> Sql {
        let mut r = self.start();
        let w = r.deletable(plan, std::slice::from_ref(reason));
        let limit = r.bind(Bind::Int(limit as i64));
        let (t, ca) = (&self.table, self.m.created_at.quote(self.dialect));
        let text = match self.dialect {
            Dialect::Sqlite => format!(
                "DELETE FROM {t} WHERE rowid IN (SELECT rowid FROM {t} WHERE {w} ORDER BY {ca} LIMIT {limit})"
            ),
            Dialect::Postgres => format!(
                "DELETE FROM {t} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {t} WHERE {w} ORDER BY {ca} LIMIT {limit}))"
            ),
        };
        r.finish(text)
    }

    /// Counts the rows `plan` deletes for any of `reasons` (the dry run; after a pass, what is
    /// left must be 0).
    pub fn count_deletable(&self, plan: &WindowPlan, reasons: &[Reason]) -> Sql {
        let mut r = self.start();
        let w = r.deletable(plan, reasons);
        let t = &self.table;
        r.finish(format!("SELECT COUNT(*) FROM {t} WHERE {w}"))
    }

    /// Counts `org`'s rows that a shorter window makes due: due at `new_cutoff`, not due at
    /// `old_cutoff` (W4's guard).
    pub fn count_newly_due(&self, org: &str, old_cutoff: Timestamp, new_cutoff: Timestamp) -> Sql {
        let mut r = self.start();
        let o = r.text(org);
        let new = r.before(new_cutoff);
        let old = r.before(old_cutoff);
        let t = &self.table;
        let oc = self.m.org.quote(self.dialect);
        r.finish(format!(
            "SELECT COUNT(*) FROM {t} WHERE {oc} = {o} AND {new} AND NOT ({old})"
        ))
    }

    /// Counts the rows due for any of `reasons` that holds keep back.
    pub fn count_held_back(&self, plan: &WindowPlan, reasons: &[Reason]) -> Sql {
        let mut r = self.start();
        let t = &self.table;
        let Some(_) = plan.kept.first() else {
            return r.finish(format!("SELECT COUNT(*) FROM {t} WHERE 1 = 0"));
        };
        let due: Vec<String> = reasons.iter().map(|x| r.due(plan, x)).collect();
        let kept = r.kept(plan).unwrap_or_else(|| "(1 = 0)".into());
        r.finish(format!(
            "SELECT COUNT(*) FROM {t} WHERE ({}) AND {kept}",
            due.join(" OR ")
        ))
    }

    /// Counts the rows that fall due by age between two moments — due under `later`'s plan,
    /// not under `earlier`'s, and not due already for ZDR — that holds keep (`held`) or not
    /// (`plan`'s forecast per day).
    pub fn count_falling_due(&self, earlier: &WindowPlan, later: &WindowPlan, held: bool) -> Sql {
        let mut r = self.start();
        let t = &self.table;
        let mut w = vec![r.due(later, &Reason::Age)];
        let before = r.due(earlier, &Reason::Age);
        w.push(format!("NOT {before}"));
        for org in &later.zdr_orgs {
            let z = r.due(later, &Reason::Zdr(org.clone()));
            w.push(format!("NOT {z}"));
        }
        match (r.kept(later), held) {
            (Some(k), true) => w.push(k),
            (Some(k), false) => w.push(format!("NOT {k}")),
            (None, true) => w.push("(1 = 0)".into()),
            (None, false) => {}
        }
        r.finish(format!(
            "SELECT COUNT(*) FROM {t} WHERE {}",
            w.join(" AND ")
        ))
    }

    /// 1 when some hold of `plan` keeps a row of the table, else 0 (stops at the first).
    pub fn any_kept(&self, plan: &WindowPlan) -> Sql {
        let mut r = self.start();
        let t = &self.table;
        let kept = r.kept(plan).unwrap_or_else(|| "(1 = 0)".into());
        r.finish(format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM {t} WHERE {kept} LIMIT 1) k"
        ))
    }

    /// Every row of the table (a partition about to be dropped).
    pub fn count_all(&self) -> Sql {
        Sql {
            text: format!("SELECT COUNT(*) FROM {}", self.table),
            binds: Vec::new(),
        }
    }

    /// The oldest `created_at`, as milliseconds since the epoch (NULL for an empty table).
    pub fn oldest(&self) -> Sql {
        let t = &self.table;
        let ca = self.m.created_at.quote(self.dialect);
        let text = match self.m.time_format {
            // Read back as text and parsed by the caller (see `parse_stored`).
            TimeFormat::Rfc3339 => format!("SELECT MIN({ca}) FROM {t}"),
            TimeFormat::Unix => format!("SELECT MIN({ca}) * 1000 FROM {t}"),
            TimeFormat::UnixMs => format!("SELECT MIN({ca}) FROM {t}"),
            TimeFormat::Native => {
                format!("SELECT (EXTRACT(EPOCH FROM MIN({ca})) * 1000)::bigint FROM {t}")
            }
        };
        Sql {
            text,
            binds: Vec::new(),
        }
    }

    /// Selects no rows but names every mapped column: fails when one is missing.
    pub fn probe_columns(&self) -> Sql {
        let cols: Vec<String> = self
            .m
            .columns()
            .iter()
            .map(|c| c.quote(self.dialect))
            .collect();
        Sql {
            text: format!("SELECT {} FROM {} LIMIT 0", cols.join(", "), self.table),
            binds: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::holds::HoldScope;
    use proptest::prelude::*;

    fn mapping(format: TimeFormat) -> WindowMapping {
        RawWindowMapping {
            table: "api_logs".into(),
            created_at: "created_at".into(),
            time_format: Some(format),
            org: "org_id".into(),
            account: "account_id".into(),
            endpoint: Some("endpoint".into()),
            id: Some("id".into()),
            batch: None,
            partitioned: false,
        }
        .build(false, true)
        .unwrap()
    }

    #[test]
    fn identifiers_are_plain_words() {
        assert!(Ident::parse("created_at").is_ok());
        for bad in ["", "1x", "a b", "a\"b", "a;b", "x-y", &"a".repeat(64)] {
            assert!(Ident::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            TableName::parse("logs.api").unwrap().quoted(),
            "\"logs\".\"api\""
        );
        assert!(TableName::parse("a.b.c").is_err());
    }

    #[test]
    fn a_mapping_refuses_what_its_backend_cannot_do() {
        let raw = RawWindowMapping {
            table: "t".into(),
            created_at: "c".into(),
            time_format: Some(TimeFormat::Native),
            org: "o".into(),
            account: "a".into(),
            endpoint: None,
            id: None,
            batch: Some(0),
            partitioned: false,
        };
        assert_eq!(
            raw.clone().build(false, false).unwrap_err().0,
            "time_format"
        );
        assert_eq!(raw.clone().build(true, true).unwrap_err().0, "endpoint");
        assert_eq!(raw.clone().build(true, false).unwrap_err().0, "batch");
        let ok = RawWindowMapping {
            time_format: None,
            batch: None,
            ..raw
        };
        assert_eq!(
            ok.clone().build(false, false).unwrap().time_format,
            TimeFormat::Rfc3339
        );
        assert_eq!(
            ok.build(true, false).unwrap().time_format,
            TimeFormat::Native
        );
    }

    #[test]
    fn holds_of_other_kinds_or_items_do_not_concern_the_window() {
        let hold = |id, scope| ActiveHold {
            id,
            case_ref: "c".into(),
            scope,
        };
        let holds = vec![
            hold(
                1,
                HoldScope {
                    kind: Some("conversation".into()),
                    ..Default::default()
                },
            ),
            hold(
                2,
                HoldScope {
                    resource: Some("c1".into()),
                    ..Default::default()
                },
            ),
            hold(
                3,
                HoldScope {
                    kind: Some("api_log".into()),
                    resource: Some("r1".into()),
                    org: Some("o1".into()),
                    ..Default::default()
                },
            ),
        ];
        let policy = WindowPolicy {
            max_age: Span::from_secs(10),
            zdr_endpoints: None,
        };
        let p = plan(
            "api_log",
            &policy,
            &BTreeMap::new(),
            &[],
            &holds,
            false,
            Timestamp::from_millis(100_000),
        );
        // Without an id column, hold 3 keeps the org's rows (its resource cannot be told).
        assert_eq!(p.kept.len(), 1);
        assert_eq!(p.kept[0].hold, 3);
        assert_eq!(p.kept[0].id, None);
        let with_id = plan(
            "api_log",
            &policy,
            &BTreeMap::new(),
            &[],
            &holds,
            true,
            Timestamp::from_millis(100_000),
        );
        assert_eq!(
            with_id.kept.iter().map(|k| k.hold).collect::<Vec<_>>(),
            vec![2, 3]
        );
    }

    /// On SQLite a mapped column that does not exist is an error, never a string literal
    /// (which a double-quoted name would silently become).
    #[test]
    fn a_missing_column_fails_the_statement_on_sqlite() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE api_logs (id TEXT, org_id TEXT, account_id TEXT, endpoint TEXT, created_at TEXT)",
        )
        .unwrap();
        let mut m = mapping(TimeFormat::Rfc3339);
        m.org = Ident::parse("organisation").unwrap();
        let policy = WindowPolicy {
            max_age: Span::from_secs(1),
            zdr_endpoints: None,
        };
        let own = BTreeMap::from([("o1".to_string(), Span::from_secs(5))]);
        let p = plan(
            "api_log",
            &policy,
            &own,
            &[],
            &[],
            true,
            Timestamp::from_millis(0),
        );
        let r = render(&m, Dialect::Sqlite);
        for sql in [r.probe_columns(), r.delete_batch(&p, &Reason::Age, 10)] {
            assert!(conn.prepare(&sql.text).is_err(), "{}", sql.text);
        }
    }

    const ORGS: [&str; 3] = ["o1", "o2", "o'3"];
    const ENDPOINTS: [&str; 3] = ["/v1/chat/completions", "/v1/files", "/v1/embeddings"];

    fn row_strategy() -> impl Strategy<Value = WindowRow> {
        (0..3usize, 0..4usize, 0..3usize, 0..6u32, 0..20_000i64).prop_map(|(o, a, e, id, t)| {
            WindowRow {
                org: ORGS[o].into(),
                account: format!("a{a}"),
                endpoint: Some(ENDPOINTS[e].into()),
                id: Some(format!("r{id}")),
                // Milliseconds within 20 s, so whole-second formats round at the edges often.
                created_at: Timestamp::from_millis(1_700_000_000_000 + t),
            }
        })
    }

    fn scope_strategy() -> impl Strategy<Value = HoldScope> {
        (
            proptest::option::of(0..3usize),
            proptest::option::of(0..4usize),
            proptest::option::of(0..6u32),
            proptest::option::of(0..2usize),
            proptest::option::of((0..20_000i64, 0..5_000i64)),
        )
            .prop_map(|(o, a, r, k, range)| HoldScope {
                org: o.map(|o| ORGS[o].to_string()),
                account: a.map(|a| format!("a{a}")),
                resource: r.map(|r| format!("r{r}")),
                kind: k.map(|k| ["api_log", "conversation"][k].to_string()),
                created_from: range.map(|(f, _)| Timestamp::from_millis(1_700_000_000_000 + f)),
                created_to: range.map(|(f, l)| Timestamp::from_millis(1_700_000_000_000 + f + l)),
            })
    }

    fn stored(format: TimeFormat, t: Timestamp) -> rusqlite::types::Value {
        use rusqlite::types::Value;
        match format {
            TimeFormat::Rfc3339 => Value::Text(rfc3339_ms(t)),
            TimeFormat::Unix => Value::Integer(t.millis().div_euclid(1000)),
            _ => Value::Integer(t.millis()),
        }
    }

    /// What the column keeps of a time: whole seconds lose the milliseconds.
    fn as_stored(format: TimeFormat, t: Timestamp) -> Timestamp {
        match format {
            TimeFormat::Unix => Timestamp::from_millis(t.millis().div_euclid(1000) * 1000),
            _ => t,
        }
    }

    fn run(conn: &rusqlite::Connection, sql: &Sql) -> usize {
        let params: Vec<rusqlite::types::Value> = sql
            .binds
            .iter()
            .map(|b| match b {
                Bind::Text(s) => rusqlite::types::Value::Text(s.clone()),
                Bind::Int(i) => rusqlite::types::Value::Integer(*i),
            })
            .collect();
        if sql.text.starts_with("SELECT") {
            conn.query_row(&sql.text, rusqlite::params_from_iter(params.iter()), |r| {
                r.get::<_, i64>(0)
            })
            .unwrap() as usize
        } else {
            conn.execute(&sql.text, rusqlite::params_from_iter(params.iter()))
                .unwrap()
        }
    }

    #[test]
    fn partition_bounds_are_read_as_postgres_prints_them() {
        let lit = |s: &str| BoundValue::Literal(s.into());
        assert_eq!(
            parse_range_bound(
                "FOR VALUES FROM ('2026-12-01 00:00:00+00') TO ('2026-12-02 00:00:00+00')"
            ),
            Some((lit("2026-12-01 00:00:00+00"), lit("2026-12-02 00:00:00+00")))
        );
        assert_eq!(
            parse_range_bound("FOR VALUES FROM (MINVALUE) TO ('it''s')"),
            Some((BoundValue::MinValue, lit("it's")))
        );
        assert_eq!(
            parse_range_bound("FOR VALUES FROM (-5) TO (MAXVALUE)"),
            Some((lit("-5"), BoundValue::MaxValue))
        );
        for other in [
            "DEFAULT",
            "FOR VALUES IN ('a')",
            "FOR VALUES WITH (modulus 4, remainder 0)",
            "FOR VALUES FROM ('a', 1) TO ('b', 2)",
            "FOR VALUES FROM ('a) TO ('b')",
        ] {
            assert_eq!(parse_range_bound(other), None, "{other}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// W3: a partition is skipped only when none of its rows is due by age, dropped only
        /// when every row it can hold is due and kept by no hold, and a drop that depends on
        /// the table names every hold that could keep one of its rows.
        #[test]
        fn a_partition_is_skipped_or_dropped_only_when_its_rows_allow(
            rows in proptest::collection::vec(row_strategy(), 1..60),
            scopes in proptest::collection::vec(scope_strategy(), 0..4),
            max_age in 0..21_000i64,
            org_window in proptest::option::of((0..3usize, 0..21_000i64)),
            from in proptest::option::of(0..20_000i64),
            len in 1..10_000i64,
            open_end in any::<bool>(),
        ) {
            let now = Timestamp::from_millis(1_700_000_000_000 + 20_000);
            let holds: Vec<ActiveHold> = scopes
                .into_iter()
                .enumerate()
                .map(|(i, scope)| ActiveHold { id: i as i64 + 1, case_ref: "c".into(), scope })
                .collect();
            let org_windows: BTreeMap<String, Span> = org_window
                .map(|(o, ms)| (ORGS[o].to_string(), Span::from_millis(ms)))
                .into_iter()
                .collect();
            let policy = WindowPolicy { max_age: Span::from_millis(max_age), zdr_endpoints: None };
            let p = plan("api_log", &policy, &org_windows, &[], &holds, true, now);
            let base = 1_700_000_000_000;
            let range = PartitionRange {
                from: from.map(|f| Timestamp::from_millis(base + f)),
                to: (!open_end).then(|| Timestamp::from_millis(base + from.unwrap_or(0) + len)),
            };
            let inside: Vec<&WindowRow> = rows
                .iter()
                .filter(|r| range.from.is_none_or(|f| r.created_at >= f))
                .filter(|r| range.to.is_none_or(|t| r.created_at < t))
                .collect();
            match p.partition_fate(&range, true) {
                PartitionFate::Young => {
                    prop_assert!(inside.iter().all(|r| !p.due(r, &Reason::Age)));
                }
                PartitionFate::Drop => {
                    prop_assert!(inside.iter().all(|r| p.deletes(r, &Reason::Age)));
                }
                PartitionFate::DropUnlessKept(reaching) => {
                    prop_assert!(inside.iter().all(|r| p.due(r, &Reason::Age)));
                    for r in &inside {
                        prop_assert!(p.kept_by(r).iter().all(|h| reaching.contains(h)));
                    }
                }
                PartitionFate::Batches => {}
            }
            prop_assert_ne!(p.partition_fate(&range, false), PartitionFate::Drop);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// The rendered SQL, run on a real SQLite table, deletes exactly the rows the plan
        /// deletes, for every reason, in every time format SQLite has; it never deletes a
        /// row a hold keeps, and what it counts as held back is what the plan keeps.
        #[test]
        fn the_sql_deletes_exactly_what_the_plan_deletes(
            rows in proptest::collection::vec(row_strategy(), 1..60),
            scopes in proptest::collection::vec(scope_strategy(), 0..4),
            max_age in 0..21_000i64,
            org_window in proptest::option::of((0..3usize, 0..21_000i64)),
            zdr in proptest::option::of(0..3usize),
            format in prop_oneof![Just(TimeFormat::Rfc3339), Just(TimeFormat::Unix), Just(TimeFormat::UnixMs)],
            shift in 0..10_000i64,
        ) {
            let m = mapping(format);
            let now = Timestamp::from_millis(1_700_000_000_000 + 20_000);
            let holds: Vec<ActiveHold> = scopes
                .into_iter()
                .enumerate()
                .map(|(i, scope)| ActiveHold { id: i as i64 + 1, case_ref: "c".into(), scope })
                .collect();
            let org_windows: BTreeMap<String, Span> = org_window
                .map(|(o, ms)| (ORGS[o].to_string(), Span::from_millis(ms)))
                .into_iter()
                .collect();
            let zdr_orgs: Vec<ZdrOrg> = zdr
                .map(|o| ZdrOrg { org: ORGS[o].into(), approved_at: now })
                .into_iter()
                .collect();
            let policy = WindowPolicy {
                max_age: Span::from_millis(max_age),
                zdr_endpoints: Some(["/v1/chat/completions".to_string(), "/v1/embeddings".to_string()].into()),
            };
            let p = plan("api_log", &policy, &org_windows, &zdr_orgs, &holds, true, now);

            let conn = rusqlite::Connection::open_in_memory().unwrap();
            conn.execute_batch(
                "CREATE TABLE api_logs (id TEXT, org_id TEXT, account_id TEXT, endpoint TEXT, created_at)",
            ).unwrap();
            let mut live: Vec<WindowRow> = Vec::new();
            for r in &rows {
                conn.execute(
                    "INSERT INTO api_logs VALUES (?1, ?2, ?3, ?4, ?5)",
                    rusqlite::params![r.id, r.org, r.account, r.endpoint, stored(format, r.created_at)],
                ).unwrap();
                live.push(WindowRow { created_at: as_stored(format, r.created_at), ..r.clone() });
            }
            let r = render(&m, Dialect::Sqlite);
            let reasons = p.reasons();
            let held: usize = live
                .iter()
                .filter(|x| reasons.iter().any(|re| p.due(x, re)) && !p.kept_by(x).is_empty())
                .count();
            prop_assert_eq!(run(&conn, &r.count_held_back(&p, &reasons)), held);
            // `plan`'s forecast: what falls due by age between now and a later moment.
            let later = plan("api_log", &policy, &org_windows, &zdr_orgs, &holds, true, now.plus(Span::from_millis(shift)));
            for kept in [false, true] {
                let expected = live
                    .iter()
                    .filter(|x| later.due(x, &Reason::Age) && !p.due(x, &Reason::Age))
                    .filter(|x| !later.zdr_orgs.iter().any(|o| later.due(x, &Reason::Zdr(o.clone()))))
                    .filter(|x| later.kept_by(x).is_empty() != kept)
                    .count();
                prop_assert_eq!(run(&conn, &r.count_falling_due(&p, &later, kept)), expected);
            }
            for reason in &reasons {
                let expected = live.iter().filter(|x| p.deletes(x, reason)).count();
                prop_assert_eq!(run(&conn, &r.count_deletable(&p, std::slice::from_ref(reason))), expected);
                // In batches of 3, until a batch comes back short.
                let mut deleted = 0;
                loop {
                    let n = run(&conn, &r.delete_batch(&p, reason, 3));
                    deleted += n;
                    if n < 3 { break; }
                }
                prop_assert_eq!(deleted, expected);
                live.retain(|x| !p.deletes(x, reason));
            }
            prop_assert_eq!(run(&conn, &r.count_deletable(&p, &reasons)), 0);
            // An account's purge (W6) takes the rest of its rows, except what holds keep.
            let account = Reason::Account("a1".into());
            let kept = live.iter().filter(|x| p.due(x, &account) && !p.kept_by(x).is_empty()).count();
            prop_assert_eq!(run(&conn, &r.count_held_back(&p, std::slice::from_ref(&account))), kept);
            let expected = live.iter().filter(|x| p.deletes(x, &account)).count();
            prop_assert_eq!(run(&conn, &r.delete_batch(&p, &account, 1000)), expected);
            live.retain(|x| !p.deletes(x, &account));
            let left: usize = run(&conn, &Sql { text: "SELECT COUNT(*) FROM api_logs".into(), binds: vec![] });
            prop_assert_eq!(left, live.len());
        }
    }
}
