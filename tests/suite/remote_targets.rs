//! Issue 21: keys from the application's data (`{attrs.NAME}`), the `http` target and the
//! `object_store` target, against real servers (a document service written here, moto's S3).

use crate::common::*;

fn library_created(id: &str, attrs: &str) -> String {
    format!(
        "{{\"type\":\"resource.created\",\"id\":\"{id}\",\"kind\":\"library\",\"account\":\"a1\",\"attrs\":{attrs}}}\n"
    )
}

both_backends! {
    async fn attrs_placeholders_name_the_file_and_a_missing_one_fails(b: Backend) {
        let env = Env::new(b).await;
        let docs = env.dir.path().join("docs");
        std::fs::create_dir_all(docs.join("a1/sub")).unwrap();
        let knobs = Knobs {
            extra: format!(
                "[kinds.library]\ngrace_after_delete = \"0s\"\ntargets = [\"docs\"]\n\
                 [targets.docs]\ntype = \"files\"\nroot = \"{}\"\npath = \"{{account}}/{{attrs.path}}\"\n",
                docs.display()
            ),
            ..Knobs::default()
        };
        let text = env.config_text(&knobs);
        let h = H::with_config(env, &text).await;
        assert_eq!(
            h.config.target_attrs.iter().cloned().collect::<Vec<_>>(),
            vec!["path".to_string()]
        );
        std::fs::write(docs.join("a1/sub/l1_report.pdf"), b"doc").unwrap();
        std::fs::write(docs.join("a1/keep.pdf"), b"other").unwrap();
        let mut ev = org_account("o1", "free", "a1");
        ev.push_str(&library_created("l1", r#"{"path":"sub/l1_report.pdf","title":"user text"}"#));
        ev.push_str(&library_created("l2", r#"{"title":"no path"}"#));
        ev.push_str(&library_created("l3", r#"{"path":"../keep.pdf"}"#));
        for id in ["l1", "l2", "l3"] {
            ev.push_str(&deleted(id));
        }
        h.ingest(&ev).await;
        let row = h.ledger.resource("l1").await.unwrap().unwrap();
        assert_eq!(
            row.target_attrs.as_deref(),
            Some(r#"{"path":"sub/l1_report.pdf"}"#),
            "only the attributes a template names are kept"
        );
        assert_eq!(h.ledger.resource("l2").await.unwrap().unwrap().target_attrs, None);
        h.sweep().await;
        assert_eq!(h.state("l1").await, "purged");
        assert!(!exists(&docs.join("a1/sub/l1_report.pdf")));
        assert!(exists(&docs.join("a1/keep.pdf")), "an attribute cannot escape its folder");
        let l2 = h.ledger.resource("l2").await.unwrap().unwrap();
        assert_ne!(l2.state.to_string(), "purged");
        let err = l2.last_error.unwrap_or_default();
        assert!(err.contains("attribute `path`"), "{err}");
        let l3 = h.ledger.resource("l3").await.unwrap().unwrap();
        assert_ne!(l3.state.to_string(), "purged");
        assert!(l3.last_error.unwrap_or_default().contains("cannot be used as a path component"));
        assert_eq!(h.receipts().await.get("l1"), Some(&1));
        h.audit_ok().await;
    }
}

/// The example configs in `config/` load as README says (from the repository root, which their
/// relative `var/` paths expect): the main one as it is, `remote-targets.toml` with the S3
/// credentials in the environment; without them it is refused naming the key.
#[test]
fn the_example_configs_load() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let check = |file: &str, creds: bool| {
        let mut c = crate::rel::bin();
        c.current_dir(root)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN");
        if creds {
            c.env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test");
        }
        c.args(["--config", file, "check-config"]).output().unwrap()
    };
    crate::rel::ok(&check("config/retentiond.toml", false));
    let out = crate::rel::ok(&check("config/remote-targets.toml", true));
    for want in [
        "blobs: object_store s3://uploads/libraries key {account}/{id} versions all, endpoint http://127.0.0.1:9000/, account_prefix {account}/",
        "vectors: http DELETE http://127.0.0.1:8081/v1/documents/{id} (timeout 10s, concurrency 8, verified)",
        "account purge: DELETE http://127.0.0.1:8081/v1/accounts/{account}",
    ] {
        assert!(out.contains(want), "want {want:?} in {out}");
    }
    let o = check("config/remote-targets.toml", false);
    assert_eq!(o.status.code(), Some(2), "{}", crate::rel::text(&o));
    assert!(
        crate::rel::stderr(&o).contains("AWS_ACCESS_KEY_ID"),
        "{}",
        crate::rel::text(&o)
    );
}
