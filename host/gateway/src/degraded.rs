//! Tenants the gateway could not load whole at start (a stored row that does not decode, an
//! active policy that does not load, a chain whose head does not read). The gateway starts
//! anyway: such a tenant's calls are answered BLOCK `tenant_unavailable`, and every other
//! tenant serves.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// What of a tenant failed to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Part {
    /// Its tenant row.
    Tenant,
    /// Its active policy.
    Policy,
    /// Its audit chain.
    Chain,
    /// Its tool catalog.
    Catalog,
    /// Its escalations.
    Escalations,
    /// Its downstream jobs.
    Jobs,
    /// Its webhook signing secret.
    Webhooks,
}

/// The degraded tenants and what failed for each. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Degraded {
    inner: Arc<RwLock<BTreeMap<String, BTreeMap<Part, String>>>>,
}

impl Degraded {
    /// Marks `tenant_id` degraded because `part` failed with `error`, and logs it.
    pub fn mark(&self, tenant_id: &str, part: Part, error: impl std::fmt::Display) {
        let part_name: &'static str = part.into();
        tracing::error!(tenant = %tenant_id, part = part_name, error = %error, "tenant degraded: it could not be loaded; its calls are blocked");
        self.inner
            .write()
            .expect("degraded lock")
            .entry(tenant_id.to_owned())
            .or_default()
            .insert(part, error.to_string());
    }

    /// Clears `part` of `tenant_id` (e.g. a new policy was activated).
    pub fn clear(&self, tenant_id: &str, part: Part) {
        let mut inner = self.inner.write().expect("degraded lock");
        if let Some(parts) = inner.get_mut(tenant_id) {
            parts.remove(&part);
            if parts.is_empty() {
                inner.remove(tenant_id);
            }
        }
    }

    /// Why `tenant_id` is degraded, if it is: each failed part and its error.
    pub fn reason(&self, tenant_id: &str) -> Option<String> {
        let inner = self.inner.read().expect("degraded lock");
        inner.get(tenant_id).map(describe)
    }

    /// Every degraded tenant with its reason.
    pub fn list(&self) -> Vec<(String, String)> {
        let inner = self.inner.read().expect("degraded lock");
        inner
            .iter()
            .map(|(t, p)| (t.clone(), describe(p)))
            .collect()
    }

    /// How many tenants are degraded.
    pub fn count(&self) -> usize {
        self.inner.read().expect("degraded lock").len()
    }
}

fn describe(parts: &BTreeMap<Part, String>) -> String {
    parts
        .iter()
        .map(|(part, error)| {
            let name: &'static str = (*part).into();
            format!("{name}: {error}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_is_degraded_until_every_failed_part_is_cleared() {
        let degraded = Degraded::default();
        degraded.mark("ten_a", Part::Policy, "does not load");
        degraded.mark("ten_a", Part::Chain, "undecodable block");
        assert_eq!(
            degraded.reason("ten_a").as_deref(),
            Some("policy: does not load; chain: undecodable block")
        );
        assert_eq!(degraded.reason("ten_b"), None);
        degraded.clear("ten_a", Part::Policy);
        assert_eq!(degraded.count(), 1);
        degraded.clear("ten_a", Part::Chain);
        assert_eq!(degraded.count(), 0);
        assert!(degraded.list().is_empty());
    }
}
