//! HTTP ingest load test (issue 10): 100,000 lifecycle events POSTed to `/v1/events` on
//! loopback, in batches, against the real server (in-process, real TCP, real ledger), on SQLite
//! and — when reachable — PostgreSQL. Prints a Markdown table of events/s.
//!
//! `cargo bench --bench http_load` (add `-- --quick` for 10,000 events). Bounded: a fixed
//! number of requests to 127.0.0.1 only, each run on a fresh ledger in a temporary folder or
//! schema. Every batch is self-contained (its resources are created, and a tenth of them
//! deleted, within it), so concurrent clients never depend on each other's batches; every event
//! carries an `event_id`, as a careful application would send. The `in-process` rows apply the
//! same batches with `ingest_reader` directly, to show what HTTP itself costs.

#[path = "../tests/suite/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Backend, Env, H, Knobs};
use retentiond::http::{HttpState, serve};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "bench-token-0123456789abcdef";
const ACCOUNTS: usize = 100;

struct Row {
    backend: &'static str,
    transport: &'static str,
    batch: usize,
    clients: usize,
    events: usize,
    secs: f64,
    p50_ms: f64,
    max_ms: f64,
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let total = if quick { 10_000 } else { 100_000 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut backends = vec![Backend::Sqlite];
    if common::pg_disabled() {
        notes.push("PostgreSQL skipped (RETENTIOND_TEST_PG=off)".to_string());
    } else if rt.block_on(pg_reachable()) {
        backends.push(Backend::Postgres);
    } else {
        notes.push(format!(
            "PostgreSQL skipped: {} unreachable",
            common::pg_base_url()
        ));
    }
    for backend in backends {
        for (batch, clients) in [(1_000, 1), (1_000, 4), (10_000, 1)] {
            rows.push(rt.block_on(run(backend, total, batch, clients, true)));
        }
        // The same batches applied in-process (no HTTP): what the transport costs.
        for batch in [1_000, 10_000] {
            rows.push(rt.block_on(run(backend, total, batch, 1, false)));
        }
    }
    println!(
        "\nHTTP ingest: {total} events over loopback (POST /v1/events, NDJSON, event_id on every line)\n"
    );
    println!(
        "| backend | via | batch | clients | events | seconds | events/s | batch p50 ms | batch max ms |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {:.2} | {:.0} | {:.1} | {:.1} |",
            r.backend,
            r.transport,
            r.batch,
            r.clients,
            r.events,
            r.secs,
            r.events as f64 / r.secs,
            r.p50_ms,
            r.max_ms
        );
    }
    for n in notes {
        println!("\n{n}");
    }
}

async fn pg_reachable() -> bool {
    use sqlx::Connection;
    matches!(
        tokio::time::timeout(
            Duration::from_secs(3),
            sqlx::PgConnection::connect(&common::pg_base_url())
        )
        .await,
        Ok(Ok(_))
    )
}

/// The events: one batch creating the org and accounts, then self-contained batches. Also
/// returns how many resources they create.
fn batches(total: usize, batch: usize) -> (Vec<String>, usize) {
    let mut out = Vec::new();
    let mut setup = String::from(
        "{\"type\":\"org.upsert\",\"org\":\"o1\",\"plan\":\"scale\",\"event_id\":\"org-o1\"}\n",
    );
    for a in 0..ACCOUNTS {
        setup.push_str(&format!(
            "{{\"type\":\"account.created\",\"account\":\"a{a}\",\"org\":\"o1\",\"event_id\":\"acct-{a}\"}}\n"
        ));
    }
    out.push(setup);
    let mut left = total - (ACCOUNTS + 1);
    let kinds = ["conversation", "file", "api_log"];
    let mut next = 0usize;
    let mut created = 0;
    while left > 0 {
        let n = left.min(batch);
        let deletes = n / 10;
        let creates = n - deletes;
        created += creates;
        let mut body = String::with_capacity(n * 140);
        let first = next;
        for _ in 0..creates {
            let kind = kinds[next % kinds.len()];
            let attrs = if kind == "api_log" {
                ",\"attrs\":{\"endpoint\":\"/v1/chat/completions\"}"
            } else {
                ""
            };
            body.push_str(&format!(
                "{{\"type\":\"resource.created\",\"id\":\"r{next}\",\"kind\":\"{kind}\",\"account\":\"a{}\"{attrs},\"event_id\":\"c-{next}\"}}\n",
                next % ACCOUNTS
            ));
            next += 1;
        }
        for d in 0..deletes {
            let id = first + d;
            body.push_str(&format!(
                "{{\"type\":\"resource.deleted\",\"id\":\"r{id}\",\"event_id\":\"d-{id}\"}}\n"
            ));
        }
        out.push(body);
        left -= n;
    }
    (out, created)
}

async fn run(backend: Backend, total: usize, batch: usize, clients: usize, http: bool) -> Row {
    let env = Env::new(backend).await;
    std::fs::write(env.dir.path().join("token"), TOKEN).unwrap();
    let extra = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\nmax_body = 67108864\ntimeout = \"5m\"\n",
        env.dir.path().join("token").display()
    );
    let text = env.config_text(&Knobs {
        extra,
        ..Default::default()
    });
    let h = H::with_config(env, &text).await;
    let state = HttpState::new(h.ledger.clone(), h.clock.clone(), h.config.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/events", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let server = tokio::spawn(serve(listener, state, stop.clone()));
    retentiond::targets::install_tls_provider();
    let client = reqwest::Client::new();
    let (mut bodies, created) = batches(total, batch);
    let setup = bodies.remove(0);
    let queue = Arc::new(std::sync::Mutex::new(bodies));

    let post = |client: reqwest::Client, url: String, body: String| async move {
        let t = Instant::now();
        let r = client
            .post(url)
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .expect("request");
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(status.is_success(), "{status}: {text}");
        t.elapsed()
    };

    let start = Instant::now();
    let mut latencies = Vec::new();
    if !http {
        // In-process: the same ingest the handler runs, without HTTP.
        let mut bodies = queue.lock().unwrap().split_off(0);
        bodies.push(setup);
        while let Some(body) = bodies.pop() {
            let t = Instant::now();
            if let Err(e) = h.try_ingest(&body).await {
                panic!("ingest: {e}");
            }
            latencies.push(t.elapsed());
        }
    } else {
        latencies.push(post(client.clone(), url.clone(), setup).await);
    }
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, url, queue) = (client.clone(), url.clone(), queue.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let Some(body) = queue.lock().unwrap().pop() else {
                    break;
                };
                lat.push(post(client.clone(), url.clone(), body).await);
            }
            lat
        }));
    }
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    stop.cancel();
    let _ = server.await;

    // Sanity: everything arrived.
    let counts = h.ledger.state_counts().await.unwrap();
    let resources: i64 = counts.iter().map(|c| c.count).sum();
    assert_eq!(resources as usize, created, "resources in the ledger");
    let deleted: i64 = counts
        .iter()
        .filter(|c| c.state == "deleted")
        .map(|c| c.count)
        .sum();
    assert_eq!(
        deleted as usize,
        total - (ACCOUNTS + 1) - created,
        "deleted resources"
    );
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Row {
        backend: match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        },
        transport: if http { "http" } else { "in-process" },
        batch,
        clients,
        events: total,
        secs,
        p50_ms: ms(latencies[latencies.len() / 2]),
        max_ms: ms(*latencies.last().unwrap()),
    }
}
