//! A real S3-protocol server for the object-store tests (and the benchmark): `moto_server`
//! (`pip install 'moto[server]'`) on a free port of 127.0.0.1, one per test, stopped on drop.
//! A machine without it fails the tests that need it, loudly: they never skip.
//!
//! The requests the tests make themselves (buckets, objects, policies, listings) are signed by
//! rusty-s3 like the target's, with moto's dummy credentials.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rusty_s3::{Bucket, Credentials, Method, S3Action, UrlStyle};

pub struct Moto {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    child: Child,
    client: reqwest::Client,
    creds: Credentials,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SIGNED_FOR: Duration = Duration::from_secs(600);

impl Moto {
    /// Starts `moto_server`; panics with the reason when it cannot.
    pub async fn start() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let bin = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start `{bin}` ({e}): install it with `pip install 'moto[server]'` (.ci/run does)")
            });
        let endpoint = format!("http://127.0.0.1:{port}");
        retentiond::targets::install_tls_provider();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut moto = Moto {
            endpoint,
            child,
            client,
            creds: Credentials::new("test", "test"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited at start ({status}) on port {port}");
            }
            if let Ok(r) = moto
                .client
                .get(format!("{}/moto-api/", moto.endpoint))
                .send()
                .await
                && r.status().is_success()
            {
                return moto;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer on port {port} within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn bucket(&self, name: &str) -> Bucket {
        Bucket::new(
            self.endpoint.parse().unwrap(),
            UrlStyle::Path,
            name.to_string(),
            "us-east-1",
        )
        .unwrap()
    }

    fn signed(&self, bucket: &str, method: Method, query: &[(&str, &str)]) -> url::Url {
        let mut q = rusty_s3::Map::new();
        for (k, v) in query {
            q.insert(*k, *v);
        }
        rusty_s3::signing::sign(
            &jiff::Timestamp::now(),
            method,
            self.bucket(bucket).base_url().clone(),
            self.creds.key(),
            self.creds.secret(),
            None,
            "us-east-1",
            SIGNED_FOR.as_secs(),
            q.iter(),
            std::iter::empty(),
        )
    }

    async fn check(&self, what: &str, r: reqwest::RequestBuilder) -> String {
        let r = r.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = r.status();
        let body = r.text().await.unwrap();
        assert!(status.is_success(), "{what}: {status}: {body}");
        body
    }

    /// Creates a bucket, versioned or not.
    pub async fn create_bucket(&self, name: &str, versioned: bool) {
        let b = self.bucket(name);
        let url = b.create_bucket(&self.creds).sign(SIGNED_FOR);
        self.check(
            &format!("create bucket {name}"),
            // hyper sends no Content-Length for an empty body; moto answers 411 without one.
            self.client
                .put(url)
                .header(reqwest::header::CONTENT_LENGTH, "0")
                .body(""),
        )
        .await;
        if versioned {
            let url = self.signed(name, Method::Put, &[("versioning", "")]);
            let body = r#"<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Status>Enabled</Status></VersioningConfiguration>"#;
            self.check(
                &format!("enable versioning on {name}"),
                self.client.put(url).body(body),
            )
            .await;
        }
    }

    /// Writes an object (a new version in a versioned bucket); returns its version id.
    pub async fn put(&self, bucket: &str, key: &str, body: &str) -> Option<String> {
        let b = self.bucket(bucket);
        let url = b.put_object(Some(&self.creds), key).sign(SIGNED_FOR);
        let r = self
            .client
            .put(url)
            .body(body.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
        assert!(r.status().is_success(), "put {key}: {}", r.status());
        r.headers()
            .get("x-amz-version-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    /// A bucket policy that denies `s3:DeleteObject` on keys under `key_prefix`.
    pub async fn deny_delete(&self, bucket: &str, key_prefix: &str) {
        let policy = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Deny","Principal":"*","Action":["s3:DeleteObject","s3:DeleteObjectVersion"],"Resource":"arn:aws:s3:::{bucket}/{key_prefix}*"}}]}}"#
        );
        let url = self.signed(bucket, Method::Put, &[("policy", "")]);
        self.check("put bucket policy", self.client.put(url).body(policy))
            .await;
    }

    /// Removes the bucket policy.
    pub async fn allow_delete(&self, bucket: &str) {
        let url = self.signed(bucket, Method::Delete, &[("policy", "")]);
        self.check("delete bucket policy", self.client.delete(url))
            .await;
    }

    /// Every version and delete marker under `prefix`: (key, version id), sorted.
    pub async fn versions(&self, bucket: &str, prefix: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut marker: Option<(String, String)> = None;
        loop {
            let mut q = vec![("versions", ""), ("prefix", prefix)];
            if let Some((k, v)) = &marker {
                q.push(("key-marker", k));
                q.push(("version-id-marker", v));
            }
            let url = self.signed(bucket, Method::Get, &q);
            let body = self.check("list versions", self.client.get(url)).await;
            for block in body
                .split("<Version>")
                .skip(1)
                .chain(body.split("<DeleteMarker>").skip(1))
            {
                out.push((tag(block, "Key"), tag(block, "VersionId")));
            }
            if body.contains("<IsTruncated>true</IsTruncated>") {
                marker = Some((
                    tag(&body, "NextKeyMarker"),
                    tag(&body, "NextVersionIdMarker"),
                ));
            } else {
                break;
            }
        }
        out.sort();
        out
    }

    /// The keys with versions or delete markers under `prefix`, sorted and unique.
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut k: Vec<String> = self
            .versions(bucket, prefix)
            .await
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        k.dedup();
        k
    }

    /// Deletes `keys` (all versions given) by raw `DeleteObjects` requests of up to 1,000:
    /// the baseline of the benchmark.
    pub async fn raw_delete(&self, bucket: &str, objects: &[(String, Option<String>)]) {
        for chunk in objects.chunks(1000) {
            let ids: Vec<rusty_s3::actions::ObjectIdentifier> = chunk
                .iter()
                .map(|(k, v)| rusty_s3::actions::ObjectIdentifier {
                    key: k.clone(),
                    version_id: v.clone(),
                })
                .collect();
            let b = self.bucket(bucket);
            let mut a = b.delete_objects(Some(&self.creds), ids.iter());
            a.set_quiet(true);
            let url = a.sign(SIGNED_FOR);
            let (body, md5) = a.body_with_md5();
            let answer = self
                .check(
                    "raw DeleteObjects",
                    self.client.post(url).header("content-md5", md5).body(body),
                )
                .await;
            assert!(!answer.contains("<Error>"), "raw DeleteObjects: {answer}");
        }
    }

    /// The TOML of an `object_store` target named `name` on this server, with credentials
    /// from files under `dir` (`access_key_id_file`/`secret_access_key_file`).
    pub fn target_toml(&self, name: &str, dir: &std::path::Path, url: &str, extra: &str) -> String {
        let id = dir.join("s3-key-id");
        let secret = dir.join("s3-secret");
        std::fs::write(&id, "test\n").unwrap();
        std::fs::write(&secret, "test\n").unwrap();
        format!(
            "[targets.{name}]\ntype = \"object_store\"\nurl = \"{url}\"\nendpoint = \"{}\"\n\
             access_key_id_file = \"{}\"\nsecret_access_key_file = \"{}\"\n{extra}\n",
            self.endpoint,
            id.display(),
            secret.display()
        )
    }
}

fn tag(body: &str, name: &str) -> String {
    let open = format!("<{name}>");
    let Some(start) = body.find(&open).map(|i| i + open.len()) else {
        return String::new();
    };
    let end = body[start..].find(&format!("</{name}>")).unwrap_or(0) + start;
    body[start..end].to_string()
}
