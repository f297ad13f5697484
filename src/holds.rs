//! Legal holds as plain data: scopes, matching, and validation (§4). No I/O.
//!
//! Invariant: a hold covers a resource exactly when every criterion its scope gives matches
//! (an AND), and a hold naming an account or its org keeps the account itself; [`HoldSet`]
//! answers the same as checking each hold in turn.
//!
//! Whether a hold *takes effect* before a purge is the ledger's business (see the Invariant H
//! section of `store`); this module only answers "does this hold cover that".

use serde::Serialize;

use crate::model::Timestamp;

/// Which data a hold covers: every given criterion must match (an AND of the criteria).
/// `created_from`/`created_to` are both inclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct HoldScope {
    pub org: Option<String>,
    pub account: Option<String>,
    pub resource: Option<String>,
    pub kind: Option<String>,
    pub created_from: Option<Timestamp>,
    pub created_to: Option<Timestamp>,
}

/// The facts about a resource that a scope can look at.
#[derive(Debug, Clone, Copy)]
pub struct HoldSubject<'a> {
    pub id: &'a str,
    pub kind: &'a str,
    pub account: &'a str,
    pub org: &'a str,
    pub created_at: Timestamp,
}

impl HoldScope {
    /// A scope must name at least one criterion, and a date range must not be inverted.
    pub fn validate(&self) -> Result<(), String> {
        if self.org.is_none()
            && self.account.is_none()
            && self.resource.is_none()
            && self.kind.is_none()
            && self.created_from.is_none()
            && self.created_to.is_none()
        {
            return Err("a hold needs a scope: give at least one of --org, --account, --resource, --kind, --created-from, --created-to".into());
        }
        if let (Some(from), Some(to)) = (self.created_from, self.created_to)
            && from > to
        {
            return Err(format!("--created-from {from} is after --created-to {to}"));
        }
        Ok(())
    }

    pub fn matches(&self, s: &HoldSubject<'_>) -> bool {
        self.org.as_deref().is_none_or(|o| o == s.org)
            && self.account.as_deref().is_none_or(|a| a == s.account)
            && self.resource.as_deref().is_none_or(|r| r == s.id)
            && self.kind.as_deref().is_none_or(|k| k == s.kind)
            && self.created_from.is_none_or(|f| s.created_at >= f)
            && self.created_to.is_none_or(|t| s.created_at <= t)
    }

    /// R8/§4: a hold that names an account, or the org it belongs to, keeps the account itself
    /// (its account-level rows) whatever its other criteria — the conservative reading.
    pub fn blocks_account(&self, account: &str, org: &str) -> bool {
        self.account.as_deref() == Some(account) || self.org.as_deref() == Some(org)
    }

    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(v) = &self.org {
            parts.push(format!("org={v}"));
        }
        if let Some(v) = &self.account {
            parts.push(format!("account={v}"));
        }
        if let Some(v) = &self.resource {
            parts.push(format!("resource={v}"));
        }
        if let Some(v) = &self.kind {
            parts.push(format!("kind={v}"));
        }
        if let Some(v) = &self.created_from {
            parts.push(format!("created_from={v}"));
        }
        if let Some(v) = &self.created_to {
            parts.push(format!("created_to={v}"));
        }
        parts.join(" ")
    }
}

/// An active hold as the sweep sees it.
#[derive(Debug, Clone)]
pub struct ActiveHold {
    pub id: i64,
    pub case_ref: String,
    pub scope: HoldScope,
}

/// The active holds, indexed so that checking a batch against many holds stays cheap: holds that
/// name a resource, account or org are looked up by that key; only the rest are scanned.
#[derive(Debug, Default, Clone)]
pub struct HoldSet {
    by_resource: std::collections::HashMap<String, Vec<usize>>,
    by_account: std::collections::HashMap<String, Vec<usize>>,
    by_org: std::collections::HashMap<String, Vec<usize>>,
    others: Vec<usize>,
    holds: Vec<ActiveHold>,
}

impl HoldSet {
    pub fn new(holds: Vec<ActiveHold>) -> Self {
        let mut set = HoldSet {
            holds,
            ..Default::default()
        };
        for (i, h) in set.holds.iter().enumerate() {
            if let Some(r) = &h.scope.resource {
                set.by_resource.entry(r.clone()).or_default().push(i);
            } else if let Some(a) = &h.scope.account {
                set.by_account.entry(a.clone()).or_default().push(i);
            } else if let Some(o) = &h.scope.org {
                set.by_org.entry(o.clone()).or_default().push(i);
            } else {
                set.others.push(i);
            }
        }
        set
    }

    pub fn is_empty(&self) -> bool {
        self.holds.is_empty()
    }

    pub fn len(&self) -> usize {
        self.holds.len()
    }

    /// Every active hold that covers this resource.
    pub fn matching(&self, s: &HoldSubject<'_>) -> Vec<&ActiveHold> {
        let empty = Vec::new();
        let candidates = self
            .by_resource
            .get(s.id)
            .unwrap_or(&empty)
            .iter()
            .chain(self.by_account.get(s.account).unwrap_or(&empty))
            .chain(self.by_org.get(s.org).unwrap_or(&empty))
            .chain(&self.others);
        candidates
            .map(|&i| &self.holds[i])
            .filter(|h| h.scope.matches(s))
            .collect()
    }

    /// Every active hold that keeps this account from being purged.
    pub fn blocking_account(&self, account: &str, org: &str) -> Vec<&ActiveHold> {
        self.holds
            .iter()
            .filter(|h| h.scope.blocks_account(account, org))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn subject<'a>(
        id: &'a str,
        kind: &'a str,
        account: &'a str,
        org: &'a str,
        at: i64,
    ) -> HoldSubject<'a> {
        HoldSubject {
            id,
            kind,
            account,
            org,
            created_at: Timestamp::from_millis(at),
        }
    }

    #[test]
    fn every_given_criterion_must_match() {
        let scope = HoldScope {
            org: Some("o1".into()),
            kind: Some("file".into()),
            created_from: Some(Timestamp::from_millis(10)),
            created_to: Some(Timestamp::from_millis(20)),
            ..Default::default()
        };
        assert!(scope.matches(&subject("r", "file", "a", "o1", 10)));
        assert!(scope.matches(&subject("r", "file", "a", "o1", 20)));
        assert!(!scope.matches(&subject("r", "file", "a", "o1", 21)));
        assert!(!scope.matches(&subject("r", "conversation", "a", "o1", 15)));
        assert!(!scope.matches(&subject("r", "file", "a", "o2", 15)));
    }

    #[test]
    fn scopes_are_validated() {
        assert!(HoldScope::default().validate().is_err());
        let inverted = HoldScope {
            created_from: Some(Timestamp::from_millis(2)),
            created_to: Some(Timestamp::from_millis(1)),
            ..Default::default()
        };
        assert!(inverted.validate().unwrap_err().contains("after"));
    }

    #[test]
    fn org_and_account_holds_block_the_account() {
        let org = HoldScope {
            org: Some("o1".into()),
            kind: Some("file".into()),
            ..Default::default()
        };
        assert!(org.blocks_account("a1", "o1"));
        assert!(!org.blocks_account("a1", "o2"));
        let kind_only = HoldScope {
            kind: Some("file".into()),
            ..Default::default()
        };
        assert!(!kind_only.blocks_account("a1", "o1"));
    }

    fn arb_scope() -> impl Strategy<Value = HoldScope> {
        let pick = |v: &'static [&'static str]| {
            proptest::option::of(proptest::sample::select(v).prop_map(String::from))
        };
        (
            pick(&["o1", "o2"]),
            pick(&["a1", "a2", "a3"]),
            pick(&["r1", "r2"]),
            pick(&["file", "conversation"]),
            proptest::option::of(0i64..100),
            proptest::option::of(0i64..100),
        )
            .prop_map(|(org, account, resource, kind, f, t)| HoldScope {
                org,
                account,
                resource,
                kind,
                created_from: f.map(Timestamp::from_millis),
                created_to: t.map(Timestamp::from_millis),
            })
    }

    proptest! {
        /// The indexed set finds exactly the holds a plain scan finds.
        #[test]
        fn hold_set_agrees_with_a_scan(
            scopes in proptest::collection::vec(arb_scope(), 0..20),
            id in proptest::sample::select(&["r1", "r2", "r3"][..]),
            kind in proptest::sample::select(&["file", "conversation"][..]),
            account in proptest::sample::select(&["a1", "a2", "a3"][..]),
            org in proptest::sample::select(&["o1", "o2"][..]),
            at in 0i64..100,
        ) {
            let holds: Vec<ActiveHold> = scopes.iter().enumerate().map(|(i, s)| ActiveHold {
                id: i as i64, case_ref: "c".into(), scope: s.clone()
            }).collect();
            let set = HoldSet::new(holds.clone());
            let s = subject(id, kind, account, org, at);
            let mut found: Vec<i64> = set.matching(&s).iter().map(|h| h.id).collect();
            found.sort();
            let expected: Vec<i64> = holds.iter().filter(|h| h.scope.matches(&s)).map(|h| h.id).collect();
            prop_assert_eq!(found, expected);
        }
    }
}
