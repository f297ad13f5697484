//! The `files` target: removes `root/path` for each resource. A missing file counts as removed;
//! a path that would leave `root` (through an id like `../x`, or a symlinked folder) is refused.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::{ItemResult, PurgeItem, Removed};
use crate::config::FilesTargetConfig;

#[derive(Debug, Clone)]
pub struct FilesTarget {
    name: String,
    root: PathBuf,
    path: String,
    account_path: Option<String>,
}

impl FilesTarget {
    pub fn new(name: &str, cfg: &FilesTargetConfig) -> FilesTarget {
        FilesTarget {
            name: name.to_string(),
            root: cfg.root.clone(),
            path: cfg.path.clone(),
            account_path: cfg.account_path.clone(),
        }
    }

    pub async fn purge(&self, items: &[PurgeItem]) -> Vec<ItemResult> {
        let me = self.clone();
        let items = items.to_vec();
        let n = items.len();
        match tokio::task::spawn_blocking(move || me.purge_blocking(&items)).await {
            Ok(r) => r,
            Err(e) => (0..n)
                .map(|_| Err(format!("target `{}`: worker failed: {e}", self.name)))
                .collect(),
        }
    }

    fn purge_blocking(&self, items: &[PurgeItem]) -> Vec<ItemResult> {
        let root = match self.checked_root() {
            Ok(r) => r,
            Err(e) => return items.iter().map(|_| Err(e.clone())).collect(),
        };
        items
            .iter()
            .map(|item| {
                let rel =
                    render(&self.path, item).map_err(|e| format!("target `{}`: {e}", self.name))?;
                self.remove_file(&root, &rel)
            })
            .collect()
    }

    pub async fn purge_account(&self, account: &str, org: &str) -> ItemResult {
        let Some(template) = self.account_path.clone() else {
            return Ok(Removed::default());
        };
        let me = self.clone();
        let item = PurgeItem::account(account, org);
        tokio::task::spawn_blocking(move || {
            let root = me.checked_root()?;
            let rel = render(&template, &item).map_err(|e| format!("target `{}`: {e}", me.name))?;
            me.remove_tree(&root, &rel)
        })
        .await
        .map_err(|e| format!("target `{}`: worker failed: {e}", self.name))?
    }

    /// How many of `items`' files exist now: what a purge would remove (for `reapply --dry-run`).
    pub async fn probe(&self, items: &[PurgeItem]) -> Vec<ItemResult> {
        let me = self.clone();
        let items = items.to_vec();
        let n = items.len();
        match tokio::task::spawn_blocking(move || {
            let root = match me.checked_root() {
                Ok(r) => r,
                Err(e) => return items.iter().map(|_| Err(e.clone())).collect(),
            };
            items
                .iter()
                .map(|item| {
                    let rel =
                        render(&me.path, item).map_err(|e| format!("target `{}`: {e}", me.name))?;
                    let files = match me.resolve(&root, &rel)? {
                        Some(p) => std::fs::symlink_metadata(&p).is_ok_and(|m| !m.is_dir()) as u64,
                        None => 0,
                    };
                    Ok(Removed {
                        files,
                        ..Removed::default()
                    })
                })
                .collect()
        })
        .await
        {
            Ok(r) => r,
            Err(e) => (0..n)
                .map(|_| Err(format!("target `{}`: worker failed: {e}", self.name)))
                .collect(),
        }
    }

    /// [`FilesTarget::probe`] for the account folder.
    pub async fn probe_account(&self, account: &str, org: &str) -> ItemResult {
        let Some(template) = self.account_path.clone() else {
            return Ok(Removed::default());
        };
        let me = self.clone();
        let item = PurgeItem::account(account, org);
        tokio::task::spawn_blocking(move || {
            let root = me.checked_root()?;
            let rel = render(&template, &item).map_err(|e| format!("target `{}`: {e}", me.name))?;
            let files = match me.resolve(&root, &rel)? {
                Some(p) => match std::fs::symlink_metadata(&p) {
                    Ok(m) if m.is_dir() => count_files(&p),
                    Ok(_) => 1,
                    Err(_) => 0,
                },
                None => 0,
            };
            Ok(Removed {
                files,
                ..Removed::default()
            })
        })
        .await
        .map_err(|e| format!("target `{}`: worker failed: {e}", self.name))?
    }

    /// The root, canonical. A missing root is an error, not "already removed": it usually
    /// means an unmounted volume, and reporting success then would be a lie.
    fn checked_root(&self) -> Result<PathBuf, String> {
        match std::fs::canonicalize(&self.root) {
            Ok(p) if p.is_dir() => Ok(p),
            Ok(p) => Err(format!(
                "target `{}`: root {} is not a directory",
                self.name,
                p.display()
            )),
            Err(e) => Err(format!(
                "target `{}`: root {} is not usable: {e}",
                self.name,
                self.root.display()
            )),
        }
    }

    /// Resolves `rel` under `root` without following symlinks out of it. `Ok(None)` when a
    /// parent folder does not exist (so neither does the file).
    fn resolve(&self, root: &Path, rel: &Path) -> Result<Option<PathBuf>, String> {
        let full = root.join(rel);
        let parent = full.parent().unwrap_or(root);
        match std::fs::canonicalize(parent) {
            Ok(p) if p.starts_with(root) => Ok(Some(p.join(full.file_name().unwrap_or_default()))),
            Ok(p) => Err(format!(
                "target `{}`: {} resolves outside root (to {}); refusing",
                self.name,
                rel.display(),
                p.display()
            )),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("target `{}`: {}: {e}", self.name, parent.display())),
        }
    }

    fn remove_file(&self, root: &Path, rel: &Path) -> ItemResult {
        let Some(path) = self.resolve(root, rel)? else {
            return Ok(Removed::default());
        };
        let removed = match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == ErrorKind::NotFound => 0,
            Err(e) => return Err(format!("target `{}`: {}: {e}", self.name, path.display())),
            Ok(m) if m.is_dir() => {
                return Err(format!(
                    "target `{}`: {} is a directory, expected a file",
                    self.name,
                    path.display()
                ));
            }
            Ok(_) => match std::fs::remove_file(&path) {
                Ok(()) => 1,
                Err(e) if e.kind() == ErrorKind::NotFound => 0,
                Err(e) => {
                    return Err(format!(
                        "target `{}`: cannot remove {}: {e}",
                        self.name,
                        path.display()
                    ));
                }
            },
        };
        // Verify: the path must be gone now.
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            _ => {
                return Err(format!(
                    "target `{}`: {} still exists after removal",
                    self.name,
                    path.display()
                ));
            }
        }
        // Tidy: drop now-empty folders up to the root (a failure here changes nothing).
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == root || !d.starts_with(root) || std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(Removed {
            files: removed,
            ..Removed::default()
        })
    }

    fn remove_tree(&self, root: &Path, rel: &Path) -> ItemResult {
        let Some(path) = self.resolve(root, rel)? else {
            return Ok(Removed::default());
        };
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Removed::default()),
            Err(e) => Err(format!("target `{}`: {}: {e}", self.name, path.display())),
            Ok(m) if m.is_dir() => {
                let count = count_files(&path);
                // remove_dir_all does not follow symlinks.
                std::fs::remove_dir_all(&path).map_err(|e| {
                    format!(
                        "target `{}`: cannot remove {}: {e}",
                        self.name,
                        path.display()
                    )
                })?;
                Ok(Removed {
                    files: count,
                    ..Removed::default()
                })
            }
            Ok(_) => {
                std::fs::remove_file(&path).map_err(|e| {
                    format!(
                        "target `{}`: cannot remove {}: {e}",
                        self.name,
                        path.display()
                    )
                })?;
                Ok(Removed {
                    rows: 0,
                    files: 1,
                    ..Removed::default()
                })
            }
        }
    }
}

fn count_files(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            Ok(_) => 1,
            Err(_) => 0,
        })
        .sum()
}

/// Fills a path template. Each value of `id`, `kind`, `account`, `org` must be a single,
/// ordinary path component: no `/`, `\\`, NUL, and not `.` or `..` — so an id can never point
/// outside the folder it belongs in. An attribute (`{attrs.path}`) may hold a relative path of
/// several components, each of them ordinary.
pub fn render(template: &str, item: &PurgeItem) -> Result<PathBuf, String> {
    super::fill_segments(template, item, "path component", |c| c == '\0').map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, account: &str) -> PurgeItem {
        PurgeItem {
            id: id.into(),
            kind: "file".into(),
            account: account.into(),
            org: "o".into(),
            attrs: Default::default(),
        }
    }

    #[test]
    fn traversal_ids_never_render() {
        assert_eq!(
            render("{account}/{id}", &item("f1", "a1")).unwrap(),
            PathBuf::from("a1/f1")
        );
        for bad in ["../../etc/passwd", "..", ".", "a/b", "a\\b", "", "x\0y"] {
            assert!(
                render("{account}/{id}", &item(bad, "a1")).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn removes_files_counts_missing_as_removed_and_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("a1")).unwrap();
        std::fs::write(root.join("a1/f1"), b"x").unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("f2"), b"keep").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("a2")).unwrap();
        let t = FilesTarget::new(
            "uploads",
            &FilesTargetConfig {
                root: root.clone(),
                path: "{account}/{id}".into(),
                account_path: None,
            },
        );
        let r = t.purge_blocking(&[item("f1", "a1"), item("f1", "a1"), item("f2", "a2")]);
        assert_eq!(
            r[0],
            Ok(Removed {
                rows: 0,
                files: 1,
                ..Removed::default()
            })
        );
        assert_eq!(
            r[1],
            Ok(Removed {
                rows: 0,
                files: 0,
                ..Removed::default()
            })
        );
        assert!(r[2].as_ref().unwrap_err().contains("outside root"), "{r:?}");
        assert!(outside.join("f2").exists());
        assert!(!root.join("a1").exists(), "empty folders are tidied");

        std::fs::create_dir_all(root.join("a3/d1")).unwrap();
        let r = t.purge_blocking(&[item("d1", "a3")]);
        assert!(r[0].as_ref().unwrap_err().contains("is a directory"));

        let missing = FilesTarget::new(
            "gone",
            &FilesTargetConfig {
                root: dir.path().join("nope"),
                path: "{id}".into(),
                account_path: None,
            },
        );
        assert!(missing.purge_blocking(&[item("f", "a")])[0].is_err());
    }
}
