//! Authorization as a capability. A service operation on a tenant's data takes a
//! [`TenantScope`] of the role it needs; the only way to get one is [`KeyRecord::require`] on the
//! authenticated key, which checks the role and takes the tenant from the key itself, never
//! from the request. An operation cannot forget the check: without the scope it cannot be
//! called.

use std::marker::PhantomData;

use crate::error::AppError;
use crate::tenants::{KeyRecord, Principal, Role};

/// A set of roles that may perform some operation on their tenant.
pub trait Capability {
    /// The roles that hold it.
    const ROLES: &'static [Role];
    /// How a refusal names what was needed.
    const NEEDS: &'static str;
}

/// Asks for decisions: agent keys.
#[derive(Debug)]
pub enum Agent {}
impl Capability for Agent {
    const ROLES: &'static [Role] = &[Role::Agent];
    const NEEDS: &'static str = "an agent key";
}

/// Reads the tenant's audit, escalations and configuration, and decides held calls: reviewer
/// and admin keys.
#[derive(Debug)]
pub enum Reviewer {}
impl Capability for Reviewer {
    const ROLES: &'static [Role] = &[Role::Reviewer, Role::Admin];
    const NEEDS: &'static str = "a reviewer or admin key";
}

/// Configures the tenant: admin keys.
#[derive(Debug)]
pub enum Admin {}
impl Capability for Admin {
    const ROLES: &'static [Role] = &[Role::Admin];
    const NEEDS: &'static str = "an admin key";
}

/// Any key of the tenant (agent, reviewer or admin).
#[derive(Debug)]
pub enum Member {}
impl Capability for Member {
    const ROLES: &'static [Role] = &[Role::Agent, Role::Reviewer, Role::Admin];
    const NEEDS: &'static str = "a tenant key";
}

/// Proof that `key` holds capability `C` on its tenant.
#[derive(Debug)]
pub struct TenantScope<C> {
    key: Principal,
    _capability: PhantomData<C>,
}

impl<C> Clone for TenantScope<C> {
    fn clone(&self) -> Self {
        Self {
            key: self.key.clone(),
            _capability: PhantomData,
        }
    }
}

impl<C> TenantScope<C> {
    /// The tenant, from the key.
    pub fn tenant_id(&self) -> &str {
        self.key
            .tenant_id
            .as_deref()
            .expect("a scope is only made for a tenant key")
    }

    /// The acting key.
    pub fn key(&self) -> &Principal {
        &self.key
    }

    /// Who holds the acting key.
    pub fn subject(&self) -> &str {
        &self.key.subject
    }
}

/// Proof that the key is the operator's.
#[derive(Debug, Clone)]
pub struct OperatorScope {
    key: Principal,
}

impl OperatorScope {
    /// The operator key.
    pub fn key(&self) -> &Principal {
        &self.key
    }
}

/// Proof that the key may manage the keys of one tenant: the operator, or that tenant's admin.
#[derive(Debug, Clone)]
pub struct KeyManager {
    key: Principal,
    tenant_id: String,
}

impl KeyManager {
    /// The tenant whose keys may be managed.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// The acting key.
    pub fn key(&self) -> &Principal {
        &self.key
    }
}

/// The checks that turn an authenticated key into a capability.
pub trait Require {
    /// A scope of capability `C` on the key's own tenant, if its role holds `C`.
    fn require<C: Capability>(&self) -> Result<TenantScope<C>, AppError>;
    /// The operator's scope, if this is the operator key.
    fn require_operator(&self, what: &str) -> Result<OperatorScope, AppError>;
    /// The right to manage `tenant_id`'s keys. Another tenant's admin is told the tenant does
    /// not exist, so its existence does not leak.
    fn manage_keys_of(&self, tenant_id: &str) -> Result<KeyManager, AppError>;
}

impl Require for Principal {
    fn require<C: Capability>(&self) -> Result<TenantScope<C>, AppError> {
        if !C::ROLES.contains(&self.role) {
            return Err(AppError::Forbidden(format!("this needs {}", C::NEEDS)));
        }
        if self.tenant_id.is_none() {
            return Err(AppError::Forbidden("this needs a tenant key".into()));
        }
        Ok(TenantScope {
            key: self.clone(),
            _capability: PhantomData,
        })
    }

    fn require_operator(&self, what: &str) -> Result<OperatorScope, AppError> {
        if self.role != Role::Operator {
            return Err(AppError::Forbidden(format!(
                "{what} needs the operator key"
            )));
        }
        Ok(OperatorScope { key: self.clone() })
    }

    fn manage_keys_of(&self, tenant_id: &str) -> Result<KeyManager, AppError> {
        let key = KeyManager {
            key: self.clone(),
            tenant_id: tenant_id.to_owned(),
        };
        match self.role {
            Role::Operator => Ok(key),
            Role::Admin if self.tenant_id.as_deref() == Some(tenant_id) => Ok(key),
            Role::Admin => Err(AppError::NotFound("tenant")),
            _ => Err(AppError::Forbidden(
                "managing keys needs an admin or the operator key".into(),
            )),
        }
    }
}

impl KeyRecord {
    /// Whether this key holds capability `C` (a role check only).
    pub fn holds<C: Capability>(&self) -> bool {
        C::ROLES.contains(&self.role)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn key(role: Role, tenant: Option<&str>) -> Principal {
        Arc::new(KeyRecord {
            key_id: "key_1".into(),
            tenant_id: tenant.map(str::to_owned),
            role,
            subject: "someone".into(),
            agent_id: None,
            created_ms: 0,
            revoked: false,
        })
    }

    #[test]
    fn a_scope_takes_its_tenant_from_the_key() {
        let scope = key(Role::Admin, Some("ten_a")).require::<Admin>().unwrap();
        assert_eq!(scope.tenant_id(), "ten_a");
    }

    #[test]
    fn a_role_outside_the_capability_is_forbidden() {
        let err = key(Role::Agent, Some("ten_a"))
            .require::<Reviewer>()
            .unwrap_err();
        assert!(matches!(err, AppError::Forbidden(m) if m.contains("reviewer or admin")));
        assert!(
            key(Role::Reviewer, Some("ten_a"))
                .require::<Admin>()
                .is_err()
        );
        assert!(
            key(Role::Admin, Some("ten_a"))
                .require::<Reviewer>()
                .is_ok()
        );
    }

    #[test]
    fn the_operator_key_has_no_tenant_scope() {
        let operator = key(Role::Operator, None);
        assert!(operator.require::<Member>().is_err());
        assert!(operator.require_operator("this").is_ok());
        assert!(
            key(Role::Admin, Some("ten_a"))
                .require_operator("this")
                .is_err()
        );
    }

    #[test]
    fn another_tenants_admin_is_told_the_tenant_does_not_exist() {
        let admin = key(Role::Admin, Some("ten_a"));
        assert!(admin.manage_keys_of("ten_a").is_ok());
        assert!(matches!(
            admin.manage_keys_of("ten_b"),
            Err(AppError::NotFound("tenant"))
        ));
        assert!(matches!(
            key(Role::Reviewer, Some("ten_a")).manage_keys_of("ten_a"),
            Err(AppError::Forbidden(_))
        ));
        assert!(key(Role::Operator, None).manage_keys_of("ten_b").is_ok());
    }
}
