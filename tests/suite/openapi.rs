//! Issue 24 item 7: `GET /v1/openapi.json` of the built daemon, every route exercised and each
//! real answer validated (JSON Schema 2020-12, `jsonschema`) against what the document declares
//! for its path, method and status; and `retentiond schema events` against `retentiond ingest`.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::*;
use crate::rel::{bin, rd_stdin, text};
use crate::roles::{Daemon, free_port, secret, tokens_toml};

/// `http.max_body` of the test daemon: a body one byte longer gets 413.
const MAX_BODY: usize = 4096;

/// The document, validators built from it, and what the test saw.
struct Checker {
    doc: Value,
    /// `components` with unknown properties refused (see [`strict`]).
    components: Value,
    /// (method, path template) → the statuses seen.
    seen: BTreeMap<(String, String), BTreeSet<u16>>,
    checked: usize,
}

/// Refuses properties a schema does not declare: `unevaluatedProperties: false` on every object
/// schema with `properties` (or an `allOf`) that says nothing about other properties. utoipa
/// leaves them open; closed, an answer with a field the document lacks fails.
fn strict(v: &mut Value, in_all_of: bool) {
    match v {
        Value::Object(o) => {
            let open =
                !o.contains_key("additionalProperties") && !o.contains_key("unevaluatedProperties");
            if open && !in_all_of && (o.contains_key("properties") || o.contains_key("allOf")) {
                o.insert("unevaluatedProperties".into(), Value::Bool(false));
            }
            for (k, child) in o.iter_mut() {
                if k == "allOf" {
                    for member in child.as_array_mut().into_iter().flatten() {
                        assert!(
                            member.get("$ref").is_none(),
                            "an allOf member is a $ref ({member}): its own closing would refuse its siblings' fields; inline it (#[schema(inline)])"
                        );
                        strict(member, true);
                    }
                } else {
                    strict(child, false);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| strict(x, false)),
        _ => {}
    }
}

fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(schema)
        .unwrap_or_else(|e| panic!("not a valid JSON Schema ({e}): {schema}"))
}

impl Checker {
    fn new(doc: Value) -> Checker {
        let mut components = doc["components"].clone();
        strict(&mut components, false);
        Checker {
            doc,
            components,
            seen: BTreeMap::new(),
            checked: 0,
        }
    }

    /// The operations the document has: (method, path template).
    fn operations(&self) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
        out
    }

    fn operation(&self, method: &Method, template: &str) -> &Value {
        let op = &self.doc["paths"][template][method.as_str().to_lowercase()];
        assert!(op.is_object(), "{method} {template} is not in the document");
        op
    }

    /// Sends a request and validates the answer against the document's response for its
    /// status: the status must be documented, and the body must match its schema (or be empty
    /// when it has none). Returns the status and the body (JSON, or a JSON string).
    #[allow(clippy::too_many_arguments)]
    async fn call(
        &mut self,
        d: &Daemon,
        method: Method,
        template: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let mut req = d
            .client
            .request(method.clone(), format!("{}{path}", d.base));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let head = resp.headers().clone();
        let ctype = head
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let raw = resp.text().await.unwrap();
        let what = format!("{method} {path} → {status}");
        let op = self.operation(&method, template).clone();
        let declared = &op["responses"][status.as_str()];
        assert!(
            declared.is_object(),
            "{what}: status {status} is not documented for {method} {template}; body: {raw}"
        );
        let value = match declared.get("content").and_then(Value::as_object) {
            None => {
                assert!(raw.is_empty(), "{what}: documented without a body: {raw}");
                Value::Null
            }
            Some(content) => {
                let (media, spec) = content
                    .iter()
                    .find(|(m, _)| ctype.starts_with(m.split(';').next().unwrap()))
                    .unwrap_or_else(|| {
                        panic!("{what}: answered {ctype}, documented {:?}", content.keys())
                    });
                let value = if media.starts_with("application/json") {
                    serde_json::from_str(&raw)
                        .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {raw}"))
                } else {
                    Value::String(raw.clone())
                };
                let mut root = spec["schema"].clone();
                assert!(root.is_object(), "{what}: no schema for {media}");
                root["components"] = self.components.clone();
                let errors: Vec<String> = validator(&root)
                    .iter_errors(&value)
                    .map(|e| format!("{} at {}", e, e.instance_path()))
                    .collect();
                assert!(
                    errors.is_empty(),
                    "{what}: the answer does not match the document ({}):\n{}\n{value:#}",
                    spec["schema"],
                    errors.join("\n")
                );
                self.checked += 1;
                value
            }
        };
        self.seen
            .entry((method.to_string(), template.to_string()))
            .or_default()
            .insert(status.as_u16());
        (status, value, head)
    }
}

/// Expects `status`.
macro_rules! expect {
    ($c:expr, $d:expr, $status:expr, $method:ident $template:literal, $path:expr, $token:expr, $body:expr) => {{
        let (s, v, h) = $c
            .call(&$d, Method::$method, $template, &$path, $token, $body, &[])
            .await;
        assert_eq!(s, $status, "{} {}: {v}", stringify!($method), $path);
        (v, h)
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_as_its_openapi_document_says() {
    // Routes are registered only through utoipa_axum's `routes!` (route and operation together).
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/http.rs")).unwrap();
    for bare in [".route(", ".route_service(", ".nest(", ".merge("] {
        assert!(
            !src.contains(bare),
            "src/http.rs registers a route with `{bare}…`, outside the OpenAPI document: use `.routes(routes!(handler))`"
        );
    }

    let env = Env::new(Backend::Sqlite).await;
    let port = free_port();
    let http = tokens_toml(env.dir.path(), &format!("127.0.0.1:{port}")).replacen(
        "[http]\n",
        &format!("[http]\nmax_body = {MAX_BODY}\n"),
        1,
    );
    let cfg = env.write_config(&env.config_text(&Knobs {
        extra: format!("[holds]\nrelease_approvals = 2\n{http}"),
        ..Knobs::default()
    }));
    let d = Daemon::start(&cfg, port, &[]).await;

    // The document, open like the probes.
    let resp = d
        .client
        .get(format!("{}/v1/openapi.json", d.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let doc: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let mut c = Checker::new(doc);

    let (app, legal, counsel, console, privacy, reader) = (
        Some(secret("app")),
        Some(secret("legal")),
        Some(secret("counsel")),
        Some(secret("console")),
        Some(secret("privacy")),
        Some(secret("reader")),
    );
    let ok = StatusCode::OK;

    // Probes and the document itself.
    expect!(c, d, ok, GET "/healthz", "/healthz", None, None);
    expect!(c, d, ok, GET "/readyz", "/readyz", None, None);
    let (m, _) = expect!(c, d, ok, GET "/metrics", "/metrics", None, None);
    assert!(m.as_str().unwrap().contains("retentiond_build_info"));
    expect!(c, d, ok, GET "/v1/openapi.json", "/v1/openapi.json", None, None);

    // Events: NDJSON and a JSON array; a bad batch.
    let setup = org_account("o1", "scale", "a1")
        + &org_account("o2", "free", "a2")
        + &created("c1", "conversation", "a1")
        + &created("f1", "file", "a1")
        + &created_log("l1", "a1", "/v1/embeddings")
        + &deleted("f1");
    let (r, _) = expect!(c, d, ok, POST "/v1/events", "/v1/events", app, Some(setup.as_str()));
    assert_eq!(r["applied"], 8, "{r}");
    let array = r#"[{"type":"resource.created","id":"c2","kind":"conversation","account":"a1","event_id":"e-c2"},
                    {"type":"resource.deleted","id":"c2","at":null}]"#;
    expect!(c, d, ok, POST "/v1/events", "/v1/events", app, Some(array));
    let (r, _) = expect!(c, d, ok, POST "/v1/events", "/v1/events", app, Some(r#"[{"type":"resource.created","id":"c2","kind":"conversation","account":"a1","event_id":"e-c2"}]"#));
    assert_eq!(r["duplicates"], 1, "{r}");
    let bad =
        "{\"type\":\"resource.deleted\",\"id\":\"c1\"}\n{\"type\":\"resource.moved\"}\n{oops\n";
    let (r, _) =
        expect!(c, d, StatusCode::BAD_REQUEST, POST "/v1/events", "/v1/events", app, Some(bad));
    assert_eq!(r["errors"].as_array().unwrap().len(), 2, "{r}");

    // Reads.
    expect!(c, d, ok, GET "/v1/resources/{id}", "/v1/resources/c1", reader, None);
    let (r, _) = expect!(c, d, ok, GET "/v1/resources/{id}", "/v1/resources/l1", reader, None);
    assert_eq!(r["endpoint"], "/v1/embeddings");
    expect!(c, d, StatusCode::NOT_FOUND, GET "/v1/resources/{id}", "/v1/resources/nope", reader, None);
    expect!(c, d, ok, GET "/v1/accounts/{id}", "/v1/accounts/a1", reader, None);
    expect!(c, d, StatusCode::NOT_FOUND, GET "/v1/accounts/{id}", "/v1/accounts/nope", reader, None);

    // Holds: place, list, show, a two-person release.
    let (h, head) = expect!(c, d, StatusCode::CREATED, POST "/v1/holds", "/v1/holds", legal,
        Some(r#"{"case":"K-1","by":"Jo Legal","reason":"subpoena","scope":{"account":"a1","created_from":"2020-01-01T00:00:00Z"}}"#));
    let id = h["id"].as_i64().unwrap();
    assert_eq!(head["location"], format!("/v1/holds/{id}").as_str());
    expect!(c, d, StatusCode::BAD_REQUEST, POST "/v1/holds", "/v1/holds", legal, Some(r#"{"case":"K-2","by":"Jo Legal"}"#));
    expect!(c, d, ok, GET "/v1/holds", "/v1/holds", reader, None);
    expect!(c, d, ok, GET "/v1/holds", "/v1/holds?active=true", reader, None);
    expect!(c, d, StatusCode::BAD_REQUEST, GET "/v1/holds", "/v1/holds?colour=red", reader, None);
    let release = format!("/v1/holds/{id}/release");
    expect!(c, d, StatusCode::BAD_REQUEST, POST "/v1/holds/{id}/release", release, legal, Some("{}"));
    let (p, _) = expect!(c, d, StatusCode::ACCEPTED, POST "/v1/holds/{id}/release", release, legal, Some(r#"{"by":"Jo Legal"}"#));
    assert_eq!(p["pending"], true);
    let (detail, _) =
        expect!(c, d, ok, GET "/v1/holds/{id}", format!("/v1/holds/{id}"), reader, None);
    assert_eq!(
        detail["pending_approvals"].as_array().unwrap().len(),
        1,
        "{detail}"
    );
    assert_eq!(detail["scope"]["account"], "a1", "{detail}");
    expect!(c, d, StatusCode::CONFLICT, POST "/v1/holds/{id}/release", release, legal, Some(r#"{"by":"Jo Legal"}"#));
    expect!(c, d, ok, POST "/v1/holds/{id}/release", release, counsel, Some(r#"{"by":"Kim Counsel"}"#));
    expect!(c, d, StatusCode::CONFLICT, POST "/v1/holds/{id}/release", release, counsel, Some(r#"{"by":"Kim Counsel"}"#));
    expect!(c, d, ok, GET "/v1/holds/{id}", format!("/v1/holds/{id}"), reader, None);
    expect!(c, d, StatusCode::NOT_FOUND, GET "/v1/holds/{id}", "/v1/holds/999", reader, None);
    expect!(c, d, StatusCode::NOT_FOUND, GET "/v1/holds/{id}", "/v1/holds/x", reader, None);
    expect!(c, d, StatusCode::NOT_FOUND, POST "/v1/holds/{id}/release", "/v1/holds/999/release", legal, Some(r#"{"by":"Jo Legal"}"#));

    // Orgs and ZDR.
    expect!(c, d, ok, GET "/v1/orgs/{id}", "/v1/orgs/o1", reader, None);
    expect!(c, d, StatusCode::NOT_FOUND, GET "/v1/orgs/{id}", "/v1/orgs/nope", reader, None);
    expect!(c, d, ok, PUT "/v1/orgs/{id}", "/v1/orgs/o3", console, Some(r#"{"plan":"scale","training_opt_out":true}"#));
    expect!(c, d, StatusCode::BAD_REQUEST, PUT "/v1/orgs/{id}", "/v1/orgs/o4", console, Some(r#"{"training_opt_out":true}"#));
    let zdr = "/v1/orgs/{id}/zdr/{action}";
    macro_rules! zdr {
        ($status:expr, $org:literal, $action:literal, $token:expr, $body:literal) => {{
            let path = format!("/v1/orgs/{}/zdr/{}", $org, $action);
            let (s, v, _) = c
                .call(&d, Method::POST, zdr, &path, $token, Some($body), &[])
                .await;
            assert_eq!(s, $status, "{path}: {v}");
        }};
    }
    zdr!(
        StatusCode::BAD_REQUEST,
        "o1",
        "request",
        console,
        r#"{"by":"Ann Admin"}"#
    );
    zdr!(
        StatusCode::CONFLICT,
        "o2",
        "request",
        console,
        r#"{"reason":"contract","by":"Ann Admin"}"#
    );
    zdr!(
        StatusCode::NOT_FOUND,
        "nope",
        "request",
        console,
        r#"{"reason":"contract","by":"Ann Admin"}"#
    );
    zdr!(
        StatusCode::NOT_FOUND,
        "o1",
        "bless",
        console,
        r#"{"reason":"contract","by":"Ann Admin"}"#
    );
    zdr!(
        ok,
        "o1",
        "request",
        console,
        r#"{"reason":"contract","by":"Ann Admin"}"#
    );
    zdr!(
        ok,
        "o1",
        "approve",
        privacy,
        r#"{"reason":"reviewed","by":"Pat Privacy"}"#
    );
    zdr!(
        StatusCode::CONFLICT,
        "o1",
        "deny",
        privacy,
        r#"{"reason":"late","by":"Pat Privacy"}"#
    );
    let (r, _) = expect!(c, d, ok, GET "/v1/orgs/{id}/data-controls", "/v1/orgs/o1/data-controls?endpoint=/v1/embeddings", reader, None);
    assert_eq!(
        (r["store"].clone(), r["reason"].clone()),
        (json!(false), json!("zdr"))
    );
    expect!(c, d, ok, GET "/v1/orgs/{id}/data-controls", "/v1/orgs/o2/data-controls?endpoint=/v1/embeddings", reader, None);
    expect!(c, d, StatusCode::BAD_REQUEST, GET "/v1/orgs/{id}/data-controls", "/v1/orgs/o1/data-controls", reader, None);
    expect!(c, d, StatusCode::NOT_FOUND, GET "/v1/orgs/{id}/data-controls", "/v1/orgs/nope/data-controls?endpoint=/v1/x", reader, None);
    let (snap, head) =
        expect!(c, d, ok, GET "/v1/data-controls", "/v1/data-controls", reader, None);
    assert!(!snap["orgs"].as_array().unwrap().is_empty(), "{snap}");
    let etag = head["etag"].to_str().unwrap().to_string();
    let (s, _, _) = c
        .call(
            &d,
            Method::GET,
            "/v1/data-controls",
            "/v1/data-controls",
            reader,
            None,
            &[("if-none-match", &etag)],
        )
        .await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);

    // Status once a sweep has run (its `last_sweeps` row) and with a ZDR org in it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (st, _) = expect!(c, d, ok, GET "/v1/status", "/v1/status", reader, None);
        if !st["last_sweeps"].as_array().unwrap().is_empty() {
            assert_eq!(st["zdr_orgs"][0]["id"], "o1", "{st}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no sweep recorded: {st}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // Every operation that needs a token: 401 without one, 403 with one lacking its scope, and
    // 413 for a body over http.max_body where it takes one.
    let big = " ".repeat(MAX_BODY + 1);
    for (method, template) in c.operations() {
        let op = c
            .operation(&Method::from_bytes(method.as_bytes()).unwrap(), &template)
            .clone();
        // Ids that pass the checks made before the body is read (a hold id is a number).
        let id = if template.starts_with("/v1/holds") {
            "1"
        } else {
            "o1"
        };
        let path = template.replace("{id}", id).replace("{action}", "request");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let body = op.get("requestBody").map(|_| "{}");
        let Some(security) = op["security"].as_array() else {
            continue;
        };
        let scopes: Vec<&str> = security
            .iter()
            .flat_map(|r| r["bearer"].as_array().unwrap())
            .map(|s| s.as_str().unwrap())
            .collect();
        let (s, _, head) = c
            .call(&d, method.clone(), &template, &path, None, body, &[])
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert!(head.contains_key("www-authenticate"));
        let lacking = if scopes.contains(&"read") {
            secret("ingest-only")
        } else {
            secret("reader")
        };
        let (s, v, _) = c
            .call(
                &d,
                method.clone(),
                &template,
                &path,
                Some(lacking),
                body,
                &[],
            )
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{method} {path}: {v}");
        if body.is_some() {
            let allowed = match scopes[0] {
                "events" => app,
                "holds" => legal,
                _ => console,
            };
            let (s, v, _) = c
                .call(
                    &d,
                    method.clone(),
                    &template,
                    &path,
                    allowed,
                    Some(big.as_str()),
                    &[],
                )
                .await;
            assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{method} {path}: {v}");
        }
    }

    // The document and the requests cover each other: each operation was exercised, and each
    // status it documents was seen (but 500 and 503, which a healthy daemon does not answer).
    let ops = c.operations();
    let exercised: BTreeSet<(String, String)> = c.seen.keys().cloned().collect();
    assert_eq!(ops, exercised, "operations documented vs exercised");
    for (key, statuses) in &c.seen {
        let op = c.operation(&Method::from_bytes(key.0.as_bytes()).unwrap(), &key.1);
        for declared in op["responses"].as_object().unwrap().keys() {
            let code: u16 = declared.parse().unwrap();
            if code == 500 || code == 503 {
                continue;
            }
            assert!(
                statuses.contains(&code),
                "{} {}: documents {code} but the test never saw it (saw {statuses:?})",
                key.0,
                key.1
            );
        }
    }
    let paths: BTreeSet<&str> = ops.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!((ops.len(), paths.len()), (17, 15), "{ops:?}");
    assert!(c.checked >= 60, "{} answers validated", c.checked);
    eprintln!(
        "openapi: {} operations on {} paths, {} answers validated",
        ops.len(),
        paths.len(),
        c.checked
    );
}

/// The example lines of SPEC §6 (copied; the README's are read from README.md).
const SPEC_EXAMPLES: &str = r#"{"type":"org.upsert","org":"o1","plan":"scale"}
{"type":"account.created","account":"a1","org":"o1"}
{"type":"resource.created","id":"c1","kind":"conversation","account":"a1","at":"2026-11-20T10:00:00Z"}
{"type":"resource.created","id":"l1","kind":"api_log","account":"a1","attrs":{"endpoint":"/v1/embeddings"}}
{"type":"resource.deleted","id":"c1","at":"2026-11-27T10:00:00Z"}
{"type":"resource.restored","id":"c1"}
{"type":"account.deletion_requested","account":"a1"}
{"type":"account.restored","account":"a1"}
"#;

/// Every `{"type":"…"}` event object in README.md.
fn readme_examples() -> Vec<Value> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut out = Vec::new();
    for (i, _) in readme.match_indices("{\"type\":\"") {
        let mut it = serde_json::Deserializer::from_str(&readme[i..]).into_iter::<Value>();
        if let Some(Ok(v)) = it.next()
            && v["type"].as_str().is_some_and(|t| t.contains('.'))
        {
            out.push(v);
        }
    }
    out
}

#[test]
fn the_events_schema_accepts_what_ingest_accepts_and_rejects_bad_shapes() {
    let o = bin().args(["schema", "events"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let schema: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    // `--json` changes nothing: it is JSON already.
    let o = bin().args(["--json", "schema", "events"]).output().unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&o.stdout).unwrap(), schema);
    let v = validator(&schema);
    let errors =
        |line: &Value| -> Vec<String> { v.iter_errors(line).map(|e| e.to_string()).collect() };

    // Every example line of SPEC §6 and of the README.
    let readme = readme_examples();
    assert!(readme.len() >= 8, "{readme:?}");
    for line in SPEC_EXAMPLES
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .chain(readme)
    {
        assert!(errors(&line).is_empty(), "{line}: {:?}", errors(&line));
    }

    // Against the real ingest, on a ledger where o1, a1 and c1 exist.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let env = rt.block_on(Env::new(Backend::Sqlite));
    let cfg = env.write_config(&env.config_text(&Knobs::default()));
    let ingest = |input: &str| rd_stdin(&cfg, &["ingest", "-"], input);
    let o = ingest(SPEC_EXAMPLES);
    assert_eq!(o.status.code(), Some(0), "SPEC §6 examples: {}", text(&o));
    let o = ingest(&created("c9", "conversation", "a1"));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // Bad shapes: the schema refuses each, and so does ingest (exit 2, nothing applied).
    let bad = [
        r#"{"type":"resource.deleted"}"#,
        r#"{"id":"c9"}"#,
        r#"{"type":"account.created","account":"a2"}"#,
        r#"{"type":"resource.deleted","id":"c9","extra":1}"#,
        r#"{"type":"resource.moved","id":"c9"}"#,
        r#"{"type":"resource.deleted","id":7}"#,
        r#"{"type":"org.upsert","org":"o1","plan":"gold"}"#,
        r#"{"type":"org.upsert","org":"o1","training_opt_out":"yes"}"#,
        r#"{"type":"org.upsert","org":"o1"}"#,
        r#"{"type":"org.upsert","org":"o1","plan":null}"#,
        r#"{"type":"resource.deleted","id":""}"#,
        "{\"type\":\"resource.deleted\",\"id\":\"c\\u0007\"}",
        r#"{"type":"resource.deleted","id":"c9","at":12}"#,
        r#"{"type":"resource.deleted","id":"c9","at":"yesterday"}"#,
        r#"{"type":"resource.deleted","id":"c9","event_id":5}"#,
        r#"{"type":"resource.deleted","id":"c9","event_id":""}"#,
        r#"{"type":"resource.created","id":"c8","kind":"conversation","account":"a1","attrs":{"endpoint":5}}"#,
        r#"{"type":"resource.created","id":"c8","kind":"conversation","account":"a1","attrs":[1]}"#,
        r#"["resource.deleted","c9"]"#,
        r#""resource.deleted""#,
    ];
    for line in bad {
        let value: Value = serde_json::from_str(line).unwrap();
        assert!(!errors(&value).is_empty(), "the schema accepts {line}");
        let o = ingest(&format!("{line}\n"));
        assert_eq!(
            o.status.code(),
            Some(2),
            "ingest accepts {line}: {}",
            text(&o)
        );
    }

    // Good shapes, the same kinds of field: the schema and ingest both accept them.
    let good = [
        r#"{"type":"resource.deleted","id":"c9","at":null,"event_id":"e-1"}"#,
        r#"{"type":"resource.restored","id":"c9","event_id":null}"#,
        r#"{"type":"org.upsert","org":"o1","training_opt_out":true}"#,
        r#"{"type":"org.upsert","org":"o1","plan":"scale","training_opt_out":null}"#,
        r#"{"type":"resource.created","id":"c8","kind":"conversation","account":"a1","attrs":{"endpoint":"/v1/x","topic":"y"}}"#,
        r#"{"type":"resource.created","id":"c7","kind":"conversation","account":"a1","attrs":null,"at":"2026-12-01T00:00:00+01:00"}"#,
    ];
    for line in good {
        let value: Value = serde_json::from_str(line).unwrap();
        assert!(errors(&value).is_empty(), "{line}: {:?}", errors(&value));
    }
    let o = ingest(&(good.join("\n") + "\n"));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // What needs the ledger or the clock is beyond a schema (README says so): valid shapes that
    // ingest still refuses.
    for line in [
        r#"{"type":"account.created","account":"a5","org":"no-such-org"}"#,
        r#"{"type":"resource.deleted","id":"c9","at":"2999-01-01T00:00:00Z"}"#,
    ] {
        let value: Value = serde_json::from_str(line).unwrap();
        assert!(errors(&value).is_empty(), "{line}: {:?}", errors(&value));
        let o = ingest(&format!("{line}\n"));
        assert_eq!(o.status.code(), Some(2), "{line}: {}", text(&o));
    }
}
