//! Lifecycle events (§6): one JSON object per line.
//!
//! Invariant: [`parse_line`] gives an [`Event`] only for a line that is valid on its own (a known
//! type, the fields it needs and no others, well-formed ids and times); a line that is not is a
//! [`LineError`] naming its line number and exactly what is wrong. Whether it fits the ledger
//! (known accounts, allowed transitions) is `ingest`'s question: this module knows nothing of it.
//!
//! Mechanism: each line is read (bounded by [`MAX_LINE`], UTF-8 checked), its envelope (`at`,
//! `event_id`) taken off, and the rest deserialized into [`EventBody`].

use std::borrow::Cow;
use std::io::BufRead;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;

use crate::ids::{AccountId, OrgId, ResourceId};
use crate::model::{Plan, Timestamp, check_id};

/// The longest line accepted: an event is a few hundred bytes; anything bigger is an error, not
/// a reason to buffer without bound.
pub const MAX_LINE: usize = 1024 * 1024;

/// One parsed event with its position in the input.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub line: usize,
    pub event_id: Option<String>,
    pub at: Option<Timestamp>,
    pub body: EventBody,
}

/// The JSON Schema of one event line ([`line_schema`], `retentiond schema events`) is derived
/// from this type: the `type` tag, the required fields and `deny_unknown_fields` come from the
/// serde attributes; `schemars` attributes add what [`parse_line`] checks besides (identifiers,
/// `attrs.endpoint`, an `org.upsert` needing `plan` or `training_opt_out`) and the envelope
/// fields `at` and `event_id`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(tag = "type", deny_unknown_fields)]
#[schemars(transform = envelope)]
pub enum EventBody {
    /// Creates or updates an org. `plan` is required for a new org; `training_opt_out` is
    /// optional (unchanged when absent, `false` for a new org).
    #[serde(rename = "org.upsert")]
    #[schemars(extend("anyOf" = [
        {"required": ["plan"], "properties": {"plan": {"type": "string"}}},
        {"required": ["training_opt_out"], "properties": {"training_opt_out": {"type": "boolean"}}},
    ]))]
    OrgUpsert {
        #[schemars(schema_with = "id_schema")]
        org: OrgId,
        #[serde(default)]
        plan: Option<Plan>,
        #[serde(default)]
        training_opt_out: Option<bool>,
    },
    #[serde(rename = "account.created")]
    AccountCreated {
        #[schemars(schema_with = "id_schema")]
        account: AccountId,
        #[schemars(schema_with = "id_schema")]
        org: OrgId,
    },
    #[serde(rename = "resource.created")]
    ResourceCreated {
        #[schemars(schema_with = "id_schema")]
        id: ResourceId,
        #[schemars(schema_with = "id_schema")]
        kind: String,
        #[schemars(schema_with = "id_schema")]
        account: AccountId,
        /// Only `endpoint` (R6) and the attributes a target's template names are kept.
        #[serde(default)]
        #[schemars(schema_with = "attrs_schema")]
        attrs: Option<serde_json::Map<String, serde_json::Value>>,
    },
    #[serde(rename = "resource.deleted")]
    ResourceDeleted {
        #[schemars(schema_with = "id_schema")]
        id: ResourceId,
    },
    #[serde(rename = "resource.restored")]
    ResourceRestored {
        #[schemars(schema_with = "id_schema")]
        id: ResourceId,
    },
    #[serde(rename = "account.deletion_requested")]
    AccountDeletionRequested {
        #[schemars(schema_with = "id_schema")]
        account: AccountId,
    },
    #[serde(rename = "account.restored")]
    AccountRestored {
        #[schemars(schema_with = "id_schema")]
        account: AccountId,
    },
}

/// What [`check_id`] accepts (the check behind [`ResourceId`], [`AccountId`] and [`OrgId`]), as
/// far as JSON Schema can say it: not empty, no control character, at most 512 characters
/// (`check_id` counts 512 *bytes*, which a schema cannot).
fn id_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": 512,
        "pattern": "^[^\\u0000-\\u001F\\u007F-\\u009F]*$",
    })
}

fn settings() -> schemars::generate::SchemaSettings {
    schemars::generate::SchemaSettings::draft2020_12().with(|s| s.inline_subschemas = true)
}

fn attrs_schema(generator: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": ["object", "null"],
        "properties": {"endpoint": id_schema(generator)},
    })
}

/// `plan` is one of [`Plan::ALL`].
impl JsonSchema for Plan {
    fn schema_name() -> Cow<'static, str> {
        "Plan".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let names: Vec<&str> = Plan::ALL.iter().map(|p| p.as_str()).collect();
        json_schema!({"type": "string", "enum": names})
    }
}

/// The fields [`parse_line`] takes off a line before the typed body (`at`, `event_id`) are
/// allowed in each type's object.
fn envelope(schema: &mut Schema) {
    let id = id_schema(&mut settings().into_generator()).to_value();
    let at = serde_json::json!({
        "type": ["string", "null"],
        "format": "date-time",
        "description": "When it happened (RFC 3339); now when absent. At most `ingest.max_clock_skew` in the future."
    });
    let mut event_id = id;
    event_id["type"] = serde_json::json!(["string", "null"]);
    event_id["description"] =
        "Makes the line idempotent: a replayed event with the same id is a no-op.".into();
    if let Some(serde_json::Value::Array(variants)) = schema.get_mut("oneOf") {
        for v in variants {
            if let Some(serde_json::Value::Object(props)) = v.get_mut("properties") {
                props.insert("at".into(), at.clone());
                props.insert("event_id".into(), event_id.clone());
            }
        }
    }
}

/// The JSON Schema (draft 2020-12) of one lifecycle event line, self-contained (no `$ref`):
/// what `retentiond schema events` prints and `POST /v1/events` documents. It accepts every
/// line [`parse_line`] accepts; of what `parse_line` and ingest reject it catches the shape
/// (unknown `type`, missing or extra fields, wrong types, empty ids, a malformed `at`), not
/// what needs the ledger or the clock (unknown accounts, forbidden transitions, `at` too far in
/// the future, an id longer than 512 bytes but not 512 characters).
pub fn line_schema() -> serde_json::Value {
    let mut schema = settings()
        .into_generator()
        .into_root_schema_for::<EventBody>();
    schema.insert("title".into(), "retentiond lifecycle event".into());
    schema.insert(
        "description".into(),
        "One line of NDJSON for `retentiond ingest` or `POST /v1/events` (SPEC §6).".into(),
    );
    schema.to_value()
}

impl EventBody {
    pub fn type_name(&self) -> &'static str {
        match self {
            EventBody::OrgUpsert { .. } => "org.upsert",
            EventBody::AccountCreated { .. } => "account.created",
            EventBody::ResourceCreated { .. } => "resource.created",
            EventBody::ResourceDeleted { .. } => "resource.deleted",
            EventBody::ResourceRestored { .. } => "resource.restored",
            EventBody::AccountDeletionRequested { .. } => "account.deletion_requested",
            EventBody::AccountRestored { .. } => "account.restored",
        }
    }

    /// The only attribute retentiond keeps: `attrs.endpoint` (R6). Everything else in `attrs`
    /// may be user content and is dropped on ingest (data minimisation).
    pub fn endpoint(&self) -> Option<&str> {
        match self {
            EventBody::ResourceCreated { attrs: Some(a), .. } => {
                a.get("endpoint").and_then(|v| v.as_str())
            }
            _ => None,
        }
    }
}

/// A line that could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct LineError {
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Parses one line (already known to be UTF-8). Blank lines are skipped by the caller.
pub fn parse_line(line: usize, text: &str) -> Result<Event, LineError> {
    let err = |reason: String| LineError { line, reason };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| err(format!("malformed JSON: {e}")))?;
    let serde_json::Value::Object(mut map) = value else {
        return Err(err("an event must be a JSON object".into()));
    };
    let at = match map.remove("at") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => {
            Some(Timestamp::parse_rfc3339(&s).map_err(|e| err(format!("`at`: {e}")))?)
        }
        Some(other) => return Err(err(format!("`at` must be an RFC 3339 string, not {other}"))),
    };
    let event_id = match map.remove("event_id") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => {
            check_id("`event_id`", &s).map_err(err)?;
            Some(s)
        }
        Some(other) => return Err(err(format!("`event_id` must be a string, not {other}"))),
    };
    if !map.contains_key("type") {
        return Err(err("missing field `type`".into()));
    }
    let body: EventBody =
        serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| err(e.to_string()))?;
    // The ids were checked as they were deserialized (`crate::ids`); the kind and the
    // endpoint are checked here.
    match &body {
        EventBody::OrgUpsert {
            plan: None,
            training_opt_out: None,
            ..
        } => {
            return Err(err(
                "`org.upsert` needs `plan` (free or scale), `training_opt_out`, or both".into(),
            ));
        }
        EventBody::ResourceCreated { kind, attrs, .. } => {
            if let Some(e) = attrs.as_ref().and_then(|a| a.get("endpoint"))
                && !e.is_string()
            {
                return Err(err(format!("`attrs.endpoint` must be a string, not {e}")));
            }
            check_id("`kind`", kind).map_err(err)?;
        }
        _ => {}
    }
    if let Some(e) = body.endpoint() {
        check_id("`attrs.endpoint`", e).map_err(err)?;
    }
    Ok(Event {
        line,
        event_id,
        at,
        body,
    })
}

/// Reads NDJSON from `input`. Returns every event, or every bad line: callers apply all or none.
pub fn read_all(input: impl BufRead) -> Result<Vec<Event>, Vec<LineError>> {
    let mut events = Vec::new();
    let mut errors = Vec::new();
    let mut lines = Lines::new(input);
    loop {
        match lines.next_event() {
            Ok(None) => break,
            Ok(Some(Ok(e))) => events.push(e),
            Ok(Some(Err(e))) => errors.push(e),
            Err(e) => {
                errors.push(LineError {
                    line: lines.line() + 1,
                    reason: format!("cannot read input: {e}"),
                });
                break;
            }
        }
    }
    if errors.is_empty() {
        Ok(events)
    } else {
        Err(errors)
    }
}

/// NDJSON lines of an input, numbered from 1. Blank lines are skipped; a line that is not UTF-8
/// or longer than [`MAX_LINE`] is an error for that line, and reading goes on.
pub struct Lines<R> {
    input: R,
    line: usize,
    buf: Vec<u8>,
}

impl<R: BufRead> Lines<R> {
    pub fn new(input: R) -> Self {
        Lines {
            input,
            line: 0,
            buf: Vec::new(),
        }
    }

    /// The number of the last line read.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The next non-blank line parsed as an event; `Ok(None)` at the end of the input.
    pub fn next_event(&mut self) -> std::io::Result<Option<Result<Event, LineError>>> {
        loop {
            self.buf.clear();
            // Read at most MAX_LINE + 1 bytes of this line, then skip the rest of an overlong one.
            let n = std::io::Read::take(&mut self.input, MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut self.buf)?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            let line = self.line;
            if self.buf.len() > MAX_LINE && self.buf.last() != Some(&b'\n') {
                let mut sink = Vec::new();
                loop {
                    sink.clear();
                    let m = std::io::Read::take(&mut self.input, 1 << 20)
                        .read_until(b'\n', &mut sink)?;
                    if m == 0 || sink.last() == Some(&b'\n') {
                        break;
                    }
                }
                return Ok(Some(Err(LineError {
                    line,
                    reason: format!("line is longer than {MAX_LINE} bytes"),
                })));
            }
            let bytes = self.buf.strip_suffix(b"\n").unwrap_or(&self.buf);
            let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
            return Ok(Some(match std::str::from_utf8(bytes) {
                Ok(t) if t.trim().is_empty() => continue,
                Ok(t) => parse_line(line, t),
                Err(e) => Err(LineError {
                    line,
                    reason: format!("not valid UTF-8 ({e})"),
                }),
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spec_example() {
        let text = r#"{"type":"org.upsert","org":"o1","plan":"scale"}
{"type":"account.created","account":"a1","org":"o1"}
{"type":"resource.created","id":"c1","kind":"conversation","account":"a1","at":"2026-11-20T10:00:00Z"}
{"type":"resource.created","id":"l1","kind":"api_log","account":"a1","attrs":{"endpoint":"/v1/embeddings"}}

{"type":"resource.deleted","id":"c1","at":"2026-11-27T10:00:00Z"}
{"type":"resource.restored","id":"c1"}
{"type":"account.deletion_requested","account":"a1"}
{"type":"account.restored","account":"a1","event_id":"e-9"}
"#;
        let events = read_all(text.as_bytes()).unwrap();
        assert_eq!(events.len(), 8);
        assert_eq!(events[3].body.endpoint(), Some("/v1/embeddings"));
        assert_eq!(events[4].line, 6, "line numbers count blank lines");
        assert_eq!(events[7].event_id.as_deref(), Some("e-9"));
    }

    #[test]
    fn org_upsert_needs_a_plan_or_a_training_opt_out() {
        let ok = parse_line(
            1,
            r#"{"type":"org.upsert","org":"o1","training_opt_out":true}"#,
        )
        .unwrap();
        assert_eq!(
            ok.body,
            EventBody::OrgUpsert {
                org: "o1".parse().unwrap(),
                plan: None,
                training_opt_out: Some(true)
            }
        );
        let e = parse_line(1, r#"{"type":"org.upsert","org":"o1"}"#).unwrap_err();
        assert!(e.reason.contains("needs `plan`"), "{e}");
        let e = parse_line(
            1,
            r#"{"type":"org.upsert","org":"o1","training_opt_out":"yes"}"#,
        )
        .unwrap_err();
        assert!(e.reason.contains("invalid type"), "{e}");
    }

    #[test]
    fn every_bad_line_is_named_with_a_reason() {
        let text = "{\"type\":\"resource.deleted\",\"id\":\"c1\"}\n{oops\n{\"type\":\"resource.moved\",\"id\":\"x\"}\n{\"type\":\"resource.deleted\",\"id\":\"c1\",\"extra\":1}\n{\"type\":\"resource.deleted\"}\n[1]\n{\"type\":\"resource.deleted\",\"id\":\"c\",\"at\":\"99999-01-01T00:00:00Z\"}\n{\"type\":\"resource.deleted\",\"id\":\"\"}\n";
        let errs = read_all(text.as_bytes()).unwrap_err();
        let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6, 7, 8]);
        assert!(errs[0].reason.contains("malformed JSON"));
        assert!(errs[1].reason.contains("resource.moved"));
        assert!(errs[2].reason.contains("extra"));
        assert!(errs[3].reason.contains("missing field `id`"));
        assert!(errs[5].reason.contains("RFC 3339"));
        assert!(errs[6].reason.contains("empty"));
    }

    #[test]
    fn invalid_utf8_and_huge_lines_are_errors_not_panics() {
        let mut input = b"{\"type\":\"resource.deleted\",\"id\":\"\xff\"}\n".to_vec();
        input.extend(vec![b'x'; MAX_LINE + 10]);
        input.extend(b"\n{\"type\":\"resource.deleted\",\"id\":\"ok\"}\n");
        let errs = read_all(&input[..]).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert!(errs[0].reason.contains("UTF-8"));
        assert!(errs[1].reason.contains("longer"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = read_all(&bytes[..]);
        }

        #[test]
        fn arbitrary_json_never_panics(s in "\\{(\"[a-z_]{1,8}\":(\"[ -~]{0,12}\"|[0-9]{1,20}|null|\\{\\}|\\[\\]),?){0,6}\\}") {
            let _ = parse_line(1, &s);
        }
    }
}
