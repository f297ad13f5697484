//! The start of a purge transaction: what active holds keep, and what is true of claims taken
//! over after a crash (issue 30).

use super::*;

/// What the start of a purge transaction left for its targets.
pub(super) struct Started {
    /// Claims no hold keeps that are still due: the targets purge them.
    pub(super) free: Vec<ResourceRow>,
    /// The claims' batch (started when anything is free).
    pub(super) batch: Option<i64>,
    /// Of `free`, claims taken over whose purge may have started before.
    pub(super) taken_over: Vec<String>,
    pub(super) report: SweepReport,
}

/// A claim taken over whose purge may have started, that a hold now keeps or that is no longer
/// due: what its targets still hold decides what the ledger says of it.
pub(super) struct Unsure {
    pub(super) row: ResourceRow,
    /// Active holds that match it (id, case).
    pub(super) holds: Vec<(i64, String)>,
    /// Its schedule when it is no longer due.
    pub(super) reschedule: Option<Reschedule>,
}

pub(super) struct Reschedule {
    pub(super) purge_after: Option<Timestamp>,
    pub(super) rule: Option<crate::model::Rule>,
}

pub(super) fn finding(t: &TargetData) -> TargetFinding {
    match t.data.as_str() {
        "gone" => TargetFinding::Gone,
        "present" => TargetFinding::Present,
        _ => TargetFinding::Unknown,
    }
}

/// `app_db:gone,uploads:present` — for log lines.
pub(super) fn target_summary(targets: &[TargetData]) -> String {
    targets
        .iter()
        .map(|t| format!("{}:{}", t.target, t.data))
        .collect::<Vec<_>>()
        .join(",")
}

impl Sweeper {
    /// Opens a purge transaction for `claims`: takes the hold lock (shared), settles what holds
    /// keep and what was taken over ([`Sweeper::start`]), then begins the transaction that
    /// will record the purges, still under the lock. No hold is placed or released from here
    /// until that transaction ends (Invariant H).
    pub(super) async fn open_purge(
        &self,
        claims: ClaimedBatch,
        now: Timestamp,
        log: &mut BatchLog,
    ) -> Result<(Started, PurgeTx), SweepError> {
        let mut gate = self.ledger.open_purge_gate().await?;
        let holds = HoldSet::new(gate.active_holds().await?);
        let started = self.start(claims, &holds, &gate, now, log).await?;
        crate::failpoint::crash("after_start");
        let tx = gate.begin_purge().await?;
        Ok((started, tx))
    }

    /// Starts a purge transaction's claims, with the hold lock held shared (`gate`) and before
    /// any target runs, in a ledger transaction of its own: claims an active hold covers go
    /// back untouched (and their blocks are recorded); claims taken over whose purge may have
    /// started (a crash) and that a hold now keeps, or that are no longer due, are found out
    /// first (`find_out`): gone everywhere → recorded purged with a receipt saying so, intact
    /// everywhere → given back, anything else → `interrupted` (issue 30); and the batch is
    /// marked started, so a hold placed after this transaction counts what is left `in_flight`.
    pub(super) async fn start(
        &self,
        claims: ClaimedBatch,
        holds: &HoldSet,
        gate: &PurgeGate,
        now: Timestamp,
        log: &mut BatchLog,
    ) -> Result<Started, SweepError> {
        let mut report = SweepReport::default();
        let mut free: Vec<ResourceRow> = Vec::with_capacity(claims.resources.len());
        let (mut held_ids, mut blocks) = (Vec::new(), Vec::new());
        let (mut unsure, mut taken_over) = (Vec::new(), Vec::new());
        let mut policy = None;
        for r in claims.resources {
            let matching: Vec<(i64, String)> = holds
                .matching(&r.hold_subject())
                .iter()
                .map(|h| (h.id, h.case_ref.clone()))
                .collect();
            // `claim_batch` is cleared by a takeover from a batch that may have started.
            let touched = r.claim_batch.is_none();
            let reschedule = match touched {
                true => self.no_longer_due(&r, now, &mut policy).await?,
                false => None,
            };
            if matching.is_empty() && reschedule.is_none() {
                if touched {
                    taken_over.push(r.id.clone());
                }
                free.push(r);
            } else if touched {
                unsure.push(Unsure {
                    row: r,
                    holds: matching,
                    reschedule,
                });
            } else {
                for (h, case) in matching {
                    blocks.push((r.id.clone(), h));
                    log.cases.insert(h, case);
                }
                held_ids.push(r.id.clone());
                log.held_info.insert(r.id.clone(), (r.kind, r.account));
            }
        }
        report.held = held_ids.len() as u64;
        let found = self.find_out(&unsure).await;

        let mut st = self.ledger.begin_under(gate).await?;
        if !held_ids.is_empty() {
            log.new_blocks = st.add_blocks("resource", &blocks, now).await?;
            st.release_claims_held(&held_ids, &self.instance).await?;
        }
        let mut drafts = Vec::new();
        let mut lines = Vec::new();
        let (mut gone, mut settled, mut interruptions, mut outcomes) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut unsure_blocks = Vec::new();
        for (u, targets) in unsure.iter().zip(&found) {
            let findings: Vec<TargetFinding> = targets.iter().map(finding).collect();
            let verdict = rules::interrupted_purge(&findings);
            if verdict == InterruptedPurge::Gone {
                gone.push((u, targets));
                continue;
            }
            let r = &u.row;
            let (purge_after, rule) = match &u.reschedule {
                Some(s) => (s.purge_after, s.rule),
                None => (r.purge_after, r.rule),
            };
            let state = match verdict {
                InterruptedPurge::Interrupted => ResourceState::Interrupted,
                _ => r.unclaimed_state(),
            };
            settled.push(SettledClaim {
                id: r.id.clone(),
                state,
                held: !u.holds.is_empty(),
                purge_after,
                rule,
            });
            unsure_blocks.extend(u.holds.iter().map(|(h, _)| (r.id.clone(), *h)));
            let hold_ids: Vec<i64> = u.holds.iter().map(|(h, _)| *h).collect();
            let subject = format!("{}/{}", r.kind, r.id);
            let summary = target_summary(targets);
            let interrupted = verdict == InterruptedPurge::Interrupted;
            let (action, outcome) = match interrupted {
                true => ("resource.purge_interrupted", InFlightOutcome::Interrupted),
                false => ("resource.purge_found_intact", InFlightOutcome::Kept),
            };
            let draft = AuditDraft::new(
                now,
                action,
                subject,
                json!({"account": r.account, "holds": hold_ids, "no_longer_due": u.reschedule.is_some(), "targets": targets}),
            );
            outcomes.push((r.id.clone(), outcome));
            lines.push((interrupted, r, hold_ids, summary, draft, targets));
        }
        if !unsure_blocks.is_empty() {
            st.add_blocks("resource", &unsure_blocks, now).await?;
        }
        let settled_ids: HashSet<String> = st
            .settle_claims(&settled, &self.instance)
            .await?
            .into_iter()
            .collect();
        lines.retain(|l| settled_ids.contains(&l.1.id));
        for (interrupted, r, _, _, draft, targets) in &lines {
            drafts.push(draft.clone());
            if *interrupted {
                interruptions.push((
                    r.id.clone(),
                    serde_json::to_string(targets).unwrap_or_else(|_| "[]".into()),
                ));
                report.interrupted += 1;
            } else {
                report.found_intact += 1;
            }
        }
        st.record_interruptions(&interruptions, now).await?;
        // Gone everywhere: the purge happened before whatever keeps it now; record it.
        let mut by_cause: BTreeMap<Cause, Vec<String>> = BTreeMap::new();
        for (u, _) in &gone {
            by_cause
                .entry(cause_of(&u.row))
                .or_default()
                .push(u.row.id.clone());
        }
        let mut recorded = HashSet::new();
        for (cause, ids) in &by_cause {
            recorded.extend(st.finish_purged(ids, *cause, &self.instance, now).await?);
        }
        let mut gone_lines = Vec::new();
        for (u, targets) in &gone {
            let r = &u.row;
            if !recorded.contains(&r.id) {
                continue;
            }
            let removed: Vec<(String, Removed)> = targets
                .iter()
                .map(|t| (t.target.clone(), Removed::default()))
                .collect();
            let mut receipt = PurgeReceipt::new(r, &removed, now);
            receipt.found_gone = Some(FoundGone {
                holds: u.holds.iter().map(|(h, _)| *h).collect(),
                no_longer_due: u.reschedule.is_some(),
            });
            drafts.push(AuditDraft::with_details(
                now,
                "resource.purged",
                format!("{}/{}", r.kind, r.id),
                &receipt,
            ));
            outcomes.push((r.id.clone(), InFlightOutcome::Purged));
            report.purged += 1;
            report.found_gone += 1;
            *report.purged_by_kind.entry(r.kind.clone()).or_default() += 1;
            gone_lines.push((
                r.clone(),
                receipt.found_gone.map(|f| f.holds).unwrap_or_default(),
            ));
        }
        outcomes.retain(|(id, o)| *o == InFlightOutcome::Purged || settled_ids.contains(id));
        st.resolve_in_flight(&outcomes, now).await?;
        let start_targets = !free.is_empty();
        if let (true, Some(b)) = (start_targets, claims.batch) {
            st.start_batch(b, now).await?;
        }
        st.commit_with_audit(&drafts).await?;

        for (r, holds) in gone_lines {
            info!(kind = %r.kind, id = %r.id, account = %r.account, holds = ?holds,
                "purge found done after a crash: its data is gone from every target; recorded purged");
        }
        for (interrupted, r, holds, summary, _, _) in lines {
            if interrupted {
                warn!(kind = %r.kind, id = %r.id, account = %r.account, holds = ?holds, targets = %summary,
                    "purge interrupted by a crash: data partly gone or not known; resource is now `interrupted`");
            } else {
                info!(kind = %r.kind, id = %r.id, account = %r.account, holds = ?holds, targets = %summary,
                    "purge found not done after a crash: its data is intact; given back");
            }
        }
        Ok(Started {
            free,
            batch: claims.batch,
            taken_over,
            report,
        })
    }

    /// For a claim taken over: `Some(new schedule)` when, under the policy in force, it is no
    /// longer due now (a policy lengthened meanwhile); `None` while it still is, or when that
    /// cannot be worked out (then it stays due, as claimed).
    pub(super) async fn no_longer_due(
        &self,
        r: &ResourceRow,
        now: Timestamp,
        policy: &mut Option<Option<crate::rules::SchedulePolicy>>,
    ) -> Result<Option<Reschedule>, StoreError> {
        if policy.is_none() {
            *policy = Some(crate::policy::in_force(&self.ledger).await?);
        }
        let Some(Some(policy)) = policy.as_ref() else {
            return Ok(None);
        };
        let Some(kind) = policy.kinds.get(&r.kind) else {
            return Ok(None);
        };
        let Some(account) = self.ledger.account(&r.account).await? else {
            return Ok(None);
        };
        let approved = self
            .ledger
            .org(&r.org)
            .await?
            .is_some_and(|o| o.zdr == crate::model::ZdrStatus::Approved);
        let mut unclaimed = r.clone();
        unclaimed.state = r.unclaimed_state();
        Ok(
            match rules::resource_schedule(&unclaimed.facts(), &account.facts(), approved, kind) {
                Some(s) if rules::is_due(s.purge_after, now) => None,
                s => Some(Reschedule {
                    purge_after: s.map(|s| s.purge_after),
                    rule: s.map(|s| s.rule),
                }),
            },
        )
    }

    /// Asks each of the resource's targets what it still holds of it (see
    /// `Target::remaining`). A target that is not configured, or that fails, cannot tell.
    pub(super) async fn find_out(&self, unsure: &[Unsure]) -> Vec<Vec<TargetData>> {
        let mut out = Vec::with_capacity(unsure.len());
        for u in unsure {
            let r = &u.row;
            let item = r.purge_item();
            let names = self.config.kinds.get(&r.kind).map(|k| k.targets.clone());
            let Some(names) = names else {
                out.push(vec![TargetData {
                    target: "-".into(),
                    data: "unknown".into(),
                    error: Some(format!("kind `{}` is not in the config", r.kind)),
                }]);
                continue;
            };
            let mut found = Vec::with_capacity(names.len());
            for name in names {
                let answer = match self.targets.get(&name) {
                    None => Err(format!("target `{name}` is not configured")),
                    Some(t) => t
                        .remaining(&r.kind, std::slice::from_ref(&item))
                        .await
                        .pop()
                        .unwrap_or_else(|| Err("no answer".into())),
                };
                found.push(match answer {
                    Ok(0) => TargetData {
                        target: name,
                        data: "gone".into(),
                        error: None,
                    },
                    Ok(_) => TargetData {
                        target: name,
                        data: "present".into(),
                        error: None,
                    },
                    Err(e) => TargetData {
                        target: name,
                        data: "unknown".into(),
                        error: Some(e),
                    },
                });
            }
            out.push(found);
        }
        out
    }
}
