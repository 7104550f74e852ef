//! Tenants, their limits, keys and webhooks as a service. Creating tenants and setting their
//! limits is the operator's; keys are managed by the operator or the tenant's admin; webhooks
//! by the admin. Key changes are recorded in the tenant's chain.

use crate::access::{Admin, KeyManager, OperatorScope, Require, TenantScope};
use std::sync::Arc;

use serde_json::json;

use super::configuration;
use crate::audit::{Effects, Kind, RecordBody, SharedLedger};
use crate::egress::Egress;
use crate::error::{AppError, Result};
use crate::page;
use crate::store::Store;
use crate::tenants::{KeyRecord, Principal, Role, Tenant, TenantLimits, Tenants};
use crate::vault::Vault;

/// Manages tenants, keys and webhooks. Cheap to clone.
#[derive(Clone)]
pub struct TenantService {
    pub(crate) tenants: Tenants,
    pub(crate) audit: SharedLedger,
    /// The most memory a tenant's evaluations may be given, MiB (the engine's cap).
    pub(crate) max_memory_mib: u32,
    /// What outbound connections may reach (webhook URLs are checked against it).
    pub(crate) egress: Egress,
    /// Serializes a tenant's configuration changes, each read, changed and recorded whole.
    pub(crate) config: Arc<tokio::sync::Mutex<()>>,
    /// Where webhook signing secrets are sealed.
    pub(crate) vault: Vault,
    pub(crate) store: Store,
}

impl TenantService {
    /// Puts every tenant's webhook secret, from the vault, in memory; a secret a row still
    /// holds in clear (written before secrets were sealed) is sealed into the vault and the row
    /// rewritten without it, in one transaction.
    pub fn load_webhook_secrets(&self, degraded: &crate::degraded::Degraded) {
        for tenant in self.tenants.all() {
            let id = tenant.id.clone();
            if let Err(e) = self.load_webhook_secret(tenant) {
                degraded.mark(&id, crate::degraded::Part::Webhooks, e);
            }
        }
    }

    fn load_webhook_secret(&self, mut tenant: Tenant) -> Result<()> {
        if let Some(clear) = tenant.webhook_secret.clone() {
            let sealed = self.vault.webhook_row(&tenant.id, &clear)?;
            self.store.commit(&[Tenants::row(&tenant), sealed])?;
            return Ok(());
        }
        if let Some(secret) = self.vault.open_webhook(&tenant.id)? {
            tenant.webhook_secret = Some(secret.to_string());
            self.tenants.replaced(tenant);
        }
        Ok(())
    }

    /// Reads a tenant and its webhook secret again after another process sharing the store
    /// changed them.
    pub fn refresh_tenant(&self, tenant_id: &str) -> Result<()> {
        self.tenants.refresh_tenant(tenant_id)?;
        if let Some(tenant) = self.tenants.get(tenant_id) {
            self.load_webhook_secret(tenant)?;
        }
        Ok(())
    }

    /// Tenants and keys, for authentication.
    pub fn tenants(&self) -> &Tenants {
        &self.tenants
    }

    /// The principal holding `secret`, if it is a live key.
    pub fn authenticate(&self, secret: &str) -> Option<Principal> {
        self.tenants.authenticate(secret)
    }

    /// Creates a tenant.
    pub fn create_tenant(&self, _operator: &OperatorScope, name: &str) -> Result<Tenant> {
        Ok(self.tenants.create_tenant(name)?)
    }

    /// Replaces a tenant's limits, recorded in the tenant's chain (old and new values) in the
    /// same write.
    pub async fn set_limits(
        &self,
        operator: &OperatorScope,
        tenant_id: &str,
        limits: impl FnOnce(TenantLimits) -> TenantLimits,
    ) -> Result<Tenant> {
        let _serial = self.config.lock().await;
        let current = self
            .tenants
            .get(tenant_id)
            .ok_or(AppError::NotFound("tenant"))?;
        let (old, new) =
            self.tenants
                .with_limits(tenant_id, limits(current.limits), self.max_memory_mib)?;
        let record = configuration(
            Kind::TenantLimitsChanged,
            operator.key(),
            json!({"old": old.limits, "new": new.limits}),
        );
        self.commit(tenant_id, record, &new).await?;
        Ok(new)
    }

    /// Commits a tenant's new row with the record of its change, then puts it in force.
    async fn commit(&self, tenant_id: &str, record: RecordBody, tenant: &Tenant) -> Result<()> {
        let effects = Effects {
            rows: vec![Tenants::row(tenant)],
            ..Effects::default()
        };
        self.audit.append(tenant_id, record, effects).await?;
        self.tenants.replaced(tenant.clone());
        Ok(())
    }

    /// Creates a key; returns its record and its secret (shown once). Recorded in the chain.
    pub async fn create_key(
        &self,
        manager: &KeyManager,
        role: Role,
        subject: &str,
        agent_id: Option<&str>,
    ) -> Result<(KeyRecord, String)> {
        let tenant_id = manager.tenant_id();
        let (key, secret) = self
            .tenants
            .create_key(tenant_id, role, subject, agent_id)?;
        let mut record = RecordBody::new(Kind::KeyCreated);
        record.actor = Some(manager.key().subject.clone());
        record.acted_by(&manager.key().key_id, &manager.key().subject);
        record.detail = Some(key_detail(&key));
        self.audit
            .append(tenant_id, record, Effects::default())
            .await?;
        Ok((key, secret))
    }

    /// A page of a tenant's keys (never their secrets), oldest first, after `cursor` (a
    /// `next_cursor` of an earlier page): at most `limit`, and the next page's cursor.
    pub fn list_keys(
        &self,
        manager: &KeyManager,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<KeyRecord>, Option<String>)> {
        if self.tenants.get(manager.tenant_id()).is_none() {
            return Err(AppError::NotFound("tenant"));
        }
        let after = cursor.map(page::parse_cursor).transpose()?;
        let sort_key =
            |k: &KeyRecord| [&k.created_ms.to_be_bytes()[..], k.key_id.as_bytes()].concat();
        let mut keys: Vec<(Vec<u8>, KeyRecord)> = self
            .tenants
            .keys_of(manager.tenant_id())?
            .into_iter()
            .map(|k| (sort_key(&k), k))
            .filter(|(at, _)| after.as_ref().is_none_or(|a| at > a))
            .collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        let limit = limit.max(1);
        let next = (keys.len() > limit).then(|| page::cursor(&keys[limit - 1].0));
        keys.truncate(limit);
        Ok((keys.into_iter().map(|(_, k)| k).collect(), next))
    }

    /// Revokes a key: by the operator, or its tenant's admin (another tenant's key looks
    /// missing). Recorded in the chain.
    pub async fn revoke_key(&self, who: &Principal, key_id: &str) -> Result<KeyRecord> {
        let tenant_id = self
            .tenants
            .key(key_id)?
            .tenant_id
            .ok_or(AppError::NotFound("key"))?;
        let manager = who.manage_keys_of(&tenant_id).map_err(|e| match e {
            AppError::NotFound(_) => AppError::NotFound("key"),
            other => other,
        })?;
        let key = self.tenants.revoke_key(key_id)?;
        let mut record = RecordBody::new(Kind::KeyRevoked);
        record.actor = Some(manager.key().subject.clone());
        record.acted_by(&manager.key().key_id, &manager.key().subject);
        record.detail = Some(key_detail(&key));
        self.audit
            .append(&tenant_id, record, Effects::default())
            .await?;
        Ok(key)
    }

    /// Sets the tenant's webhook URLs (none: webhooks removed), recorded in the chain (the
    /// URLs, never the secret) in the same write; returns the new signing secret (shown once).
    /// A URL whose host is an address the egress guard refuses is refused here, naming the
    /// rule; a name is checked each time it is delivered to.
    pub async fn set_webhooks(
        &self,
        scope: &TenantScope<Admin>,
        urls: Vec<String>,
    ) -> Result<String> {
        for url in &urls {
            if let Ok(parsed) = reqwest::Url::parse(url) {
                self.egress
                    .policy()
                    .check_url(&parsed)
                    .map_err(|e| AppError::Invalid {
                        code: "egress_denied",
                        message: format!("`{url}`: {e}"),
                    })?;
            }
        }
        let _serial = self.config.lock().await;
        let tenant_id = scope.tenant_id();
        let (tenant, secret) = self.tenants.with_webhooks(tenant_id, urls)?;
        let mut effects = Effects {
            rows: vec![Tenants::row(&tenant)],
            ..Effects::default()
        };
        let record = if tenant.webhook_urls.is_empty() {
            effects.removes.push(Vault::webhook_key(tenant_id));
            configuration(Kind::WebhooksRemoved, scope.key(), json!({}))
        } else {
            effects
                .rows
                .push(self.vault.webhook_row(tenant_id, &secret)?);
            configuration(
                Kind::WebhooksSet,
                scope.key(),
                json!({"urls": tenant.webhook_urls}),
            )
        };
        self.audit.append(tenant_id, record, effects).await?;
        self.tenants.replaced(tenant);
        Ok(secret)
    }

    /// The tenant's webhook URLs.
    pub fn webhooks(&self, scope: &TenantScope<Admin>) -> Result<Vec<String>> {
        Ok(self
            .tenants
            .get(scope.tenant_id())
            .ok_or(AppError::NotFound("tenant"))?
            .webhook_urls)
    }
}

fn key_detail(key: &KeyRecord) -> String {
    serde_json::json!({
        "key_id": key.key_id,
        "role": key.role.as_str(),
        "subject": key.subject,
        "agent_id": key.agent_id,
    })
    .to_string()
}
