//! Tenants, their limits, and API keys: creation, hashing, authentication, revocation.
//!
//! A key's secret is shown once, when created; the store keeps only its blake3 hash. Every key
//! is cached in memory by hash, so authenticating a request is one hash and one map lookup.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::clock::SharedClock;
use crate::degraded::{Degraded, Part};
use crate::store::{self, Store, StoreError, Table, Write};
use writ_runtime::evaluation::Limits;

/// Prefix of tenant keys (agent, reviewer, admin).
pub const KEY_PREFIX: &str = "wk_live_";
/// Prefix of the operator key.
pub const OPERATOR_KEY_PREFIX: &str = "wk_op_";

/// Errors of tenant and key management.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    /// No such tenant (or not visible to the caller).
    #[error("tenant not found")]
    TenantNotFound,
    /// No such key (or not visible to the caller).
    #[error("key not found")]
    KeyNotFound,
    /// A value is outside what is allowed.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Result of a tenant operation.
pub type Result<T> = std::result::Result<T, TenantError>;

/// What a key may do.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Role {
    /// Manages tenants. Not tied to a tenant.
    Operator,
    /// Manages its tenant's keys and policies; may also review.
    Admin,
    /// Reads its tenant's audit log and decides escalations.
    Reviewer,
    /// Asks for decisions.
    Agent,
}

impl Role {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A tenant's sandbox and escalation limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantLimits {
    /// Fuel per evaluation.
    pub fuel: u64,
    /// Linear memory per evaluation, in MiB.
    pub memory_mib: u32,
    /// Deadline per evaluation, in milliseconds.
    pub deadline_ms: u64,
    /// How long an escalated call is held for a human, in seconds.
    pub escalation_hold_s: u64,
    /// Escalations that may be pending at once; beyond, new ones are blocked.
    #[serde(default = "default_max_pending")]
    pub max_pending_escalations: usize,
    /// Escalate an ALLOW whose resolved method is DELETE or whose catalog entry is destructive.
    #[serde(default = "default_true")]
    pub irreversible_gate: bool,
    /// Calls per second (token bucket); 0: no call-rate limit. See [`crate::shares`].
    #[serde(default)]
    pub rate_per_s: u32,
    /// Calls the rate bucket holds (a burst); at least 1.
    #[serde(default)]
    pub burst: u32,
    /// Evaluation wall time the tenant may spend per second, ms; 0: no budget.
    #[serde(default = "default_eval_ms_per_s")]
    pub eval_ms_per_s: u64,
    /// The tenant's evaluations running at once (within the gateway's own slots).
    #[serde(default = "default_max_evaluations")]
    pub max_evaluations: usize,
    /// The tenant's calls that may wait for admission at once; beyond, 429.
    #[serde(default = "default_max_queued")]
    pub max_queued: usize,
    /// Longest a call waits for admission, ms; a longer wait is refused at once, 429.
    #[serde(default = "default_queue_ms")]
    pub queue_ms: u64,
    /// Policies the tenant may keep stored (uploaded and not deleted); beyond, uploads are
    /// refused with 409 `policy_quota`.
    #[serde(default = "default_max_policies")]
    pub max_policies: usize,
    /// Bytes of components the tenant may keep stored; beyond, uploads are refused with 413
    /// `policy_quota`.
    #[serde(default = "default_max_policy_bytes")]
    pub max_policy_bytes: u64,
}

fn default_max_policies() -> usize {
    32
}

fn default_max_policy_bytes() -> u64 {
    64 << 20
}

fn default_eval_ms_per_s() -> u64 {
    1_000
}

fn default_max_evaluations() -> usize {
    8
}

fn default_max_queued() -> usize {
    256
}

fn default_queue_ms() -> u64 {
    2_000
}

fn default_true() -> bool {
    true
}

fn default_max_pending() -> usize {
    10_000
}

impl Default for TenantLimits {
    fn default() -> Self {
        let l = Limits::default();
        Self {
            fuel: l.fuel,
            memory_mib: (l.memory_bytes >> 20) as u32,
            deadline_ms: l.deadline.as_millis() as u64,
            escalation_hold_s: 60,
            max_pending_escalations: default_max_pending(),
            irreversible_gate: true,
            rate_per_s: 0,
            burst: 0,
            eval_ms_per_s: default_eval_ms_per_s(),
            max_evaluations: default_max_evaluations(),
            max_queued: default_max_queued(),
            queue_ms: default_queue_ms(),
            max_policies: default_max_policies(),
            max_policy_bytes: default_max_policy_bytes(),
        }
    }
}

impl TenantLimits {
    /// Largest fuel a tenant may be given.
    pub const MAX_FUEL: u64 = 1_000_000_000;
    /// Largest deadline a tenant may be given, in milliseconds.
    pub const MAX_DEADLINE_MS: u64 = 10_000;
    /// Longest escalation hold, in seconds.
    pub const MAX_HOLD_S: u64 = 24 * 3600;
    /// Most bytes of components a tenant may be allowed to store.
    pub const MAX_POLICY_BYTES: u64 = 64 << 30;

    /// Checks the limits against the bounds; `max_memory_mib` is the engine's pool slot size.
    pub fn validate(&self, max_memory_mib: u32) -> Result<()> {
        let bad = |what: String| Err(TenantError::Invalid(what));
        if self.fuel == 0 || self.fuel > Self::MAX_FUEL {
            return bad(format!("fuel must be 1 to {}", Self::MAX_FUEL));
        }
        if self.memory_mib == 0 || self.memory_mib > max_memory_mib {
            return bad(format!("memory_mib must be 1 to {max_memory_mib}"));
        }
        if self.deadline_ms == 0 || self.deadline_ms > Self::MAX_DEADLINE_MS {
            return bad(format!(
                "deadline_ms must be 1 to {}",
                Self::MAX_DEADLINE_MS
            ));
        }
        if self.escalation_hold_s == 0 || self.escalation_hold_s > Self::MAX_HOLD_S {
            return bad(format!(
                "escalation_hold_s must be 1 to {}",
                Self::MAX_HOLD_S
            ));
        }
        let within = |name: &str, value: u64, low: u64, high: u64| {
            if (low..=high).contains(&value) {
                Ok(())
            } else {
                bad(format!("{name} must be {low} to {high}"))
            }
        };
        within("rate_per_s", self.rate_per_s.into(), 0, 1_000_000)?;
        within("burst", self.burst.into(), 0, 1_000_000)?;
        within("eval_ms_per_s", self.eval_ms_per_s, 0, 60_000)?;
        within("max_evaluations", self.max_evaluations as u64, 1, 1_024)?;
        within("max_queued", self.max_queued as u64, 1, 100_000)?;
        within("queue_ms", self.queue_ms, 0, 60_000)?;
        within("max_policies", self.max_policies as u64, 1, 10_000)?;
        within(
            "max_policy_bytes",
            self.max_policy_bytes,
            1,
            Self::MAX_POLICY_BYTES,
        )?;
        Ok(())
    }

    /// The sandbox limits for one evaluation.
    pub fn sandbox(&self) -> Limits {
        Limits {
            fuel: self.fuel,
            deadline: Duration::from_millis(self.deadline_ms),
            memory_bytes: (self.memory_mib as usize) << 20,
        }
    }
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// `ten_…`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
    /// Limits.
    pub limits: TenantLimits,
    /// Webhook URLs notified of escalations.
    #[serde(default)]
    pub webhook_urls: Vec<String>,
    /// HMAC-SHA256 key signing webhook deliveries, in memory only: it is stored sealed in the
    /// vault. (Read from a row, it is one written before that, which the gateway moves into the
    /// vault at start.)
    #[serde(default, skip_serializing)]
    pub webhook_secret: Option<String>,
}

/// A key as stored (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// `key_…`: public, names the key in the API and the audit log.
    pub key_id: String,
    /// The tenant; `None` for the operator key.
    pub tenant_id: Option<String>,
    /// What the key may do.
    pub role: Role,
    /// Who holds it, e.g. a reviewer's email; becomes `actor_human_id`.
    pub subject: String,
    /// For agent keys: the only agent id it may act as; `None` means any agent of the tenant.
    pub agent_id: Option<String>,
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
    /// Whether the key was revoked.
    pub revoked: bool,
}

/// The authenticated caller of a request.
pub type Principal = Arc<KeyRecord>;

/// Tenants and keys, cached in memory over the store. Cheap to clone.
#[derive(Clone)]
pub struct Tenants {
    store: Store,
    clock: SharedClock,
    /// The limits a new tenant starts with.
    defaults: TenantLimits,
    keys: Arc<RwLock<HashMap<[u8; 32], Principal>>>,
    tenants: Arc<RwLock<HashMap<String, Tenant>>>,
}

/// Hashes a key secret as stored.
pub fn hash_key(secret: &str) -> [u8; 32] {
    *blake3::hash(secret.as_bytes()).as_bytes()
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// A new random id with `prefix`, e.g. `evt_…` (128 bits).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", random_hex(16))
}

/// A new id with `prefix` that sorts by creation time: a ULID (the time in ms, 48 bits, then 80
/// random bits) as 32 hex digits. Rows keyed by such ids (escalations, jobs, the event index)
/// are appended at the end of their tree rather than at a random leaf.
pub fn new_ordered_id(prefix: &str, now_ms: u64) -> String {
    let id = ulid::Ulid::from_parts(now_ms, rand::random());
    format!("{prefix}{:032x}", u128::from(id))
}

/// A new operator key secret.
pub fn new_operator_secret() -> String {
    format!("{OPERATOR_KEY_PREFIX}{}", random_hex(24))
}

impl Tenants {
    /// Loads every tenant and key from the store.
    /// A tenant row that does not decode is marked in `degraded` (its calls are blocked); a key
    /// row that does not decode is logged and that key does not authenticate.
    pub fn load(
        store: Store,
        clock: SharedClock,
        defaults: TenantLimits,
        degraded: &Degraded,
    ) -> Result<Self> {
        let (keys, bad_keys) = store.scan_each::<KeyRecord>(Table::Keys, b"")?;
        for (hash, e) in bad_keys {
            tracing::error!(key_hash = %hex::encode(hash), error = %e, "a stored key does not decode; it will not authenticate");
        }
        let keys = keys
            .into_iter()
            .filter(|(_, k)| !k.revoked)
            .filter_map(|(hash, k)| Some((<[u8; 32]>::try_from(hash).ok()?, Arc::new(k))))
            .collect();
        let (tenants, bad_tenants) = store.scan_each::<Tenant>(Table::Tenants, b"")?;
        for (id, e) in bad_tenants {
            degraded.mark(&String::from_utf8_lossy(&id), Part::Tenant, e);
        }
        let tenants = tenants
            .into_iter()
            .map(|(_, t)| (t.id.clone(), t))
            .collect();
        Ok(Self {
            store,
            clock,
            defaults,
            keys: Arc::new(RwLock::new(keys)),
            tenants: Arc::new(RwLock::new(tenants)),
        })
    }

    /// Reads a tenant's row again after another process sharing the store changed it.
    pub fn refresh_tenant(&self, tenant_id: &str) -> Result<()> {
        let row = self
            .store
            .get::<Tenant>(Table::Tenants, tenant_id.as_bytes())?;
        let mut tenants = self.tenants.write().expect("tenants lock");
        match row {
            Some(tenant) => tenants.insert(tenant.id.clone(), tenant),
            None => tenants.remove(tenant_id),
        };
        Ok(())
    }

    /// Reads a key's row (by its hash) again after another process sharing the store changed
    /// it: a revoked key stops authenticating here too.
    pub fn refresh_key(&self, hash: &[u8]) -> Result<()> {
        let Ok(hash) = <[u8; 32]>::try_from(hash) else {
            return Ok(());
        };
        let row = self.store.get::<KeyRecord>(Table::Keys, &hash)?;
        let mut keys = self.keys.write().expect("keys lock");
        match row.filter(|k| !k.revoked) {
            Some(key) => keys.insert(hash, Arc::new(key)),
            None => keys.remove(&hash),
        };
        Ok(())
    }

    /// Reads every tenant and key again (the operator key stays).
    pub fn refresh_all(&self) -> Result<()> {
        let keys: Vec<([u8; 32], Principal)> = self
            .store
            .scan::<KeyRecord>(Table::Keys, b"")?
            .into_iter()
            .filter(|(_, k)| !k.revoked)
            .filter_map(|(hash, k)| Some((<[u8; 32]>::try_from(hash).ok()?, Arc::new(k))))
            .collect();
        let tenants: HashMap<String, Tenant> = self
            .store
            .scan::<Tenant>(Table::Tenants, b"")?
            .into_iter()
            .map(|(_, t)| (t.id.clone(), t))
            .collect();
        {
            let mut held = self.keys.write().expect("keys lock");
            held.retain(|_, k| k.role == Role::Operator);
            held.extend(keys);
        }
        *self.tenants.write().expect("tenants lock") = tenants;
        Ok(())
    }

    /// The principal holding `secret`, if it is a live key.
    pub fn authenticate(&self, secret: &str) -> Option<Principal> {
        let hash = hash_key(secret);
        self.keys.read().expect("keys lock").get(&hash).cloned()
    }

    /// Registers the operator key (from the environment or the key file), replacing any
    /// other; idempotent.
    pub fn install_operator_key(&self, secret: &str) {
        let hash = hash_key(secret);
        if self.keys.read().expect("keys lock").contains_key(&hash) {
            return;
        }
        let record = KeyRecord {
            key_id: "key_operator".into(),
            tenant_id: None,
            role: Role::Operator,
            subject: "operator".into(),
            agent_id: None,
            created_ms: self.clock.now_ms(),
            revoked: false,
        };
        // The operator key is not persisted: it comes from the environment or its file at
        // every start, so rotating it is replacing that file or variable.
        let mut keys = self.keys.write().expect("keys lock");
        keys.retain(|_, k| k.role != Role::Operator);
        keys.insert(hash, Arc::new(record));
    }

    /// Creates a tenant with default limits.
    pub fn create_tenant(&self, name: &str) -> Result<Tenant> {
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(TenantError::Invalid("name must be 1 to 200 bytes".into()));
        }
        let tenant = Tenant {
            id: new_id("ten_"),
            name: name.to_owned(),
            created_ms: self.clock.now_ms(),
            limits: self.defaults,
            webhook_urls: Vec::new(),
            webhook_secret: None,
        };
        self.store
            .put(Table::Tenants, tenant.id.as_bytes(), &tenant)?;
        self.tenants
            .write()
            .expect("tenants lock")
            .insert(tenant.id.clone(), tenant.clone());
        Ok(tenant)
    }

    /// A tenant by id.
    pub fn get(&self, tenant_id: &str) -> Option<Tenant> {
        self.tenants
            .read()
            .expect("tenants lock")
            .get(tenant_id)
            .cloned()
    }

    /// Every tenant.
    pub fn all(&self) -> Vec<Tenant> {
        let mut all: Vec<_> = self
            .tenants
            .read()
            .expect("tenants lock")
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| a.created_ms.cmp(&b.created_ms).then(a.id.cmp(&b.id)));
        all
    }

    /// The tenant as it is and as it would be with `limits`, after validating them; nothing
    /// is written (see [`Tenants::row`] and [`Tenants::replaced`]).
    pub fn with_limits(
        &self,
        tenant_id: &str,
        limits: TenantLimits,
        max_memory_mib: u32,
    ) -> Result<(Tenant, Tenant)> {
        limits.validate(max_memory_mib)?;
        let current = self.get(tenant_id).ok_or(TenantError::TenantNotFound)?;
        let mut updated = current.clone();
        updated.limits = limits;
        Ok((current, updated))
    }

    /// The tenant with webhook `urls` and a new signing secret (returned once), after
    /// validating them; nothing is written.
    pub fn with_webhooks(&self, tenant_id: &str, urls: Vec<String>) -> Result<(Tenant, String)> {
        if urls.len() > 10 {
            return Err(TenantError::Invalid("at most 10 webhook URLs".into()));
        }
        for url in &urls {
            let ok = url.len() <= 2048
                && reqwest::Url::parse(url)
                    .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !ok {
                return Err(TenantError::Invalid(format!(
                    "`{url}` is not an http(s) URL of at most 2048 bytes"
                )));
            }
        }
        let mut updated = self.get(tenant_id).ok_or(TenantError::TenantNotFound)?;
        let secret = (!urls.is_empty()).then(|| format!("whsec_{}", random_hex(24)));
        updated.webhook_secret = secret.clone();
        updated.webhook_urls = urls;
        Ok((updated, secret.unwrap_or_default()))
    }

    /// A tenant's store row, to commit with the record of its change.
    pub fn row(tenant: &Tenant) -> Write {
        (
            Table::Tenants,
            tenant.id.as_bytes().to_vec(),
            serde_json::to_vec(tenant).expect("tenants serialize"),
        )
    }

    /// Puts a tenant whose row was committed into the in-memory table.
    pub fn replaced(&self, tenant: Tenant) {
        self.tenants
            .write()
            .expect("tenants lock")
            .insert(tenant.id.clone(), tenant);
    }

    /// Creates a key for a tenant; returns the record and the secret, shown once.
    pub fn create_key(
        &self,
        tenant_id: &str,
        role: Role,
        subject: &str,
        agent_id: Option<&str>,
    ) -> Result<(KeyRecord, String)> {
        if role == Role::Operator {
            return Err(TenantError::Invalid(
                "role must be agent, reviewer or admin".into(),
            ));
        }
        if self.get(tenant_id).is_none() {
            return Err(TenantError::TenantNotFound);
        }
        let subject = subject.trim();
        if subject.is_empty() || subject.len() > 256 {
            return Err(TenantError::Invalid(
                "subject must be 1 to 256 bytes".into(),
            ));
        }
        if agent_id.is_some() && role != Role::Agent {
            return Err(TenantError::Invalid(
                "agent_id only applies to agent keys".into(),
            ));
        }
        if let Some(agent) = agent_id
            && !crate::valid_name(agent)
        {
            return Err(TenantError::Invalid(
                "agent_id must be 1 to 256 printable characters".into(),
            ));
        }
        let secret = format!("{KEY_PREFIX}{}", random_hex(24));
        let hash = hash_key(&secret);
        let record = KeyRecord {
            key_id: new_id("key_"),
            tenant_id: Some(tenant_id.to_owned()),
            role,
            subject: subject.to_owned(),
            agent_id: agent_id.map(str::to_owned),
            created_ms: self.clock.now_ms(),
            revoked: false,
        };
        self.store.put(Table::Keys, &hash, &record)?;
        self.store
            .put_raw(Table::KeyIds, record.key_id.as_bytes(), &hash)?;
        self.keys
            .write()
            .expect("keys lock")
            .insert(hash, Arc::new(record.clone()));
        Ok((record, secret))
    }

    /// A key's record by id.
    pub fn key(&self, key_id: &str) -> Result<KeyRecord> {
        let hash = self
            .store
            .get_raw(Table::KeyIds, key_id.as_bytes())?
            .ok_or(TenantError::KeyNotFound)?;
        self.store
            .get::<KeyRecord>(Table::Keys, &hash)?
            .ok_or(TenantError::KeyNotFound)
    }

    /// Revokes a key: it stops authenticating at once.
    pub fn revoke_key(&self, key_id: &str) -> Result<KeyRecord> {
        let hash = self
            .store
            .get_raw(Table::KeyIds, key_id.as_bytes())?
            .ok_or(TenantError::KeyNotFound)?;
        let mut record = self
            .store
            .get::<KeyRecord>(Table::Keys, &hash)?
            .ok_or(TenantError::KeyNotFound)?;
        record.revoked = true;
        self.store.put(Table::Keys, &hash, &record)?;
        if let Ok(hash) = <[u8; 32]>::try_from(hash) {
            self.keys.write().expect("keys lock").remove(&hash);
        }
        Ok(record)
    }

    /// Keys of a tenant (records only).
    pub fn keys_of(&self, tenant_id: &str) -> Result<Vec<KeyRecord>> {
        let mut keys: Vec<KeyRecord> = self
            .store
            .scan::<KeyRecord>(Table::Keys, b"")?
            .into_iter()
            .map(|(_, k)| k)
            .filter(|k| k.tenant_id.as_deref() == Some(tenant_id))
            .collect();
        keys.sort_by_key(|k| k.created_ms);
        Ok(keys)
    }
}

/// The prefix of every row of `tenant_id` in tenant-scoped tables: the id and the separator.
pub fn tenant_prefix(tenant_id: &str) -> Vec<u8> {
    store::key(&[tenant_id.as_bytes(), b""])
}

/// The tenant a tenant-scoped row's key belongs to (see [`tenant_key`]).
pub fn tenant_of_key(key: &[u8]) -> String {
    let end = key.iter().position(|b| *b == 0).unwrap_or(key.len());
    String::from_utf8_lossy(&key[..end]).into_owned()
}

/// Key used to store a tenant's rows in tenant-scoped tables.
pub fn tenant_key(tenant_id: &str, rest: &[&[u8]]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = vec![tenant_id.as_bytes()];
    parts.extend_from_slice(rest);
    store::key(&parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_ids_sort_by_creation_time_and_stay_unguessable() {
        let first = new_ordered_id("esc_", 1_000);
        let later: Vec<String> = (0..100).map(|_| new_ordered_id("esc_", 1_002)).collect();
        for id in &later {
            let hex = id.strip_prefix("esc_").unwrap();
            assert_eq!(hex.len(), 32, "{id}");
            assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
            assert!(*id > first, "{id} sorts after {first}");
        }
        // 80 random bits after the time: ids made in the same millisecond differ.
        let distinct: std::collections::HashSet<_> = later.iter().collect();
        assert_eq!(distinct.len(), later.len());
    }
}
