//! R8, account purges: an account whose grace passed, whose resources are all purged and that no
//! hold keeps gets its account-level targets run and is recorded purged.

use super::*;

impl Sweeper {
    /// R8: accounts whose grace passed, all of whose resources are purged, and that no hold
    /// keeps, get their account-level targets run and are marked purged.
    pub(super) async fn purge_accounts(
        &self,
        now: Timestamp,
        stop: &CancellationToken,
    ) -> Result<SweepReport, SweepError> {
        let mut report = SweepReport::default();
        let mut cursor: (Timestamp, String) = (Timestamp::from_millis(i64::MIN), String::new());
        loop {
            let page = self
                .ledger
                .due_accounts(
                    now,
                    (cursor.0, &cursor.1),
                    self.config.scheduler.batch_size as i64,
                )
                .await?;
            let Some(last) = page.last() else { break };
            cursor = (
                last.purge_after.unwrap_or(Timestamp::from_millis(i64::MIN)),
                last.id.clone(),
            );
            for a in &page {
                if stop.is_cancelled() {
                    return Ok(report);
                }
                if self.purge_account(a, now).await? {
                    report.accounts_purged += 1;
                }
            }
        }
        Ok(report)
    }

    pub(super) async fn purge_account(
        &self,
        a: &AccountRow,
        now: Timestamp,
    ) -> Result<bool, SweepError> {
        let mut tx = self.ledger.begin_purge().await?;
        if tx.has_unpurged(&a.id).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        let active = tx.active_holds().await?;
        let holds = HoldSet::new(active.clone());
        let blocking = holds.blocking_account(&a.id, &a.org);
        if !blocking.is_empty() {
            let pairs: Vec<(String, i64)> = blocking.iter().map(|h| (a.id.clone(), h.id)).collect();
            let cases: HashMap<i64, String> = blocking
                .iter()
                .map(|h| (h.id, h.case_ref.clone()))
                .collect();
            let new = tx.add_blocks("account", &pairs, now).await?;
            tx.commit_with_audit(&[]).await?;
            for (_, hold) in new {
                info!(account = %a.id, hold = hold, case = %cases.get(&hold).cloned().unwrap_or_default(), "account purge blocked by hold");
            }
            return Ok(false);
        }
        let mut removed = Vec::new();
        let mut error = None;
        // W6: the account's rows of windowed kinds go first; rows a hold keeps keep the
        // account too, as a held resource would.
        let mut window_rows = BTreeMap::new();
        match self.purge_account_windows(&a.id, &active, now).await {
            Ok(Ok(rows)) => window_rows = rows,
            Ok(Err(keeping)) => {
                let pairs: Vec<(String, i64)> =
                    keeping.iter().map(|h| (a.id.clone(), *h)).collect();
                let new = tx.add_blocks("account", &pairs, now).await?;
                tx.commit_with_audit(&[]).await?;
                for (_, hold) in new {
                    info!(account = %a.id, hold = hold, "account purge blocked by hold: it keeps rows of a windowed kind");
                }
                return Ok(false);
            }
            Err(e) => error = Some(e),
        }
        let targets: &[String] = match error {
            None => &self.config.account_targets,
            Some(_) => &[],
        };
        for tname in targets {
            match self.targets.get(tname) {
                None => error = Some(format!("target `{tname}` is not configured")),
                Some(t) => {
                    let started = std::time::Instant::now();
                    let r = t.purge_account(&a.id, &a.org).await;
                    crate::metrics::record_target_purge(tname, started.elapsed());
                    match r {
                        Ok(r) => removed.push((tname.clone(), r)),
                        Err(e) => error = Some(e),
                    }
                }
            }
            if error.is_some() {
                break;
            }
        }
        if let Some(e) = error {
            tx.rollback().await?;
            let mut failures = self.account_failures.lock().expect("not poisoned");
            if failures.get(&a.id) != Some(&e) {
                warn!(account = %a.id, error = %e, message_id = crate::telemetry::message_id::TARGET_FAILURE, "account purge failed; retried every sweep");
                failures.insert(a.id.clone(), e);
            }
            return Ok(false);
        }
        crate::failpoint::crash("account_after_targets");
        if !tx.finish_account_purged(&a.id, now).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        let counts = self.ledger_counts_for(&mut tx, &a.id).await?;
        let mut details = json!({
                "org": a.org, "deletion_requested_at": a.deletion_requested_at, "purge_after": a.purge_after,
                "purged_at": now, "resources_purged": counts,
                "targets": removed.iter().map(|(t, x)| x.json_for(t)).collect::<Vec<_>>(),
        });
        if !window_rows.is_empty() {
            details["window_rows"] = json!(window_rows);
        }
        let draft = AuditDraft::new(now, "account.purged", format!("account/{}", a.id), details);
        tx.commit_with_audit(&[draft]).await?;
        crate::failpoint::crash("account_after_commit");
        self.account_failures
            .lock()
            .expect("not poisoned")
            .remove(&a.id);
        let total = removed.iter().fold(Removed::default(), |mut acc, (_, x)| {
            acc += *x;
            acc
        });
        info!(
            account = %a.id, org = %a.org,
            deletion_requested_at = %a.deletion_requested_at.map(|t| t.to_string()).unwrap_or_default(),
            targets = %removed.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>().join(","),
            rows = total.rows, files = total.files, message_id = crate::telemetry::message_id::PURGED, "account purged"
        );
        Ok(true)
    }

    pub(super) async fn ledger_counts_for(
        &self,
        tx: &mut crate::store::LedgerTx,
        account: &str,
    ) -> Result<BTreeMap<String, i64>, StoreError> {
        let scope = crate::holds::HoldScope {
            account: Some(account.to_string()),
            ..Default::default()
        };
        Ok(tx
            .count_matching(&scope)
            .await?
            .into_iter()
            .filter(|c| c.state == "purged")
            .map(|c| (c.kind, c.count))
            .collect())
    }
}
