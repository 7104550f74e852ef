//! The gateway's domain error: what a service operation can fail with. The API maps each
//! variant to a status and code once (`api/error.rs`).

use crate::audit::AuditError;
use crate::catalog::CatalogError;
use crate::policies::PolicyError;
use crate::store::StoreError;
use crate::tenants::TenantError;
use crate::vault::VaultError;

/// Errors of the gateway's operations; the API maps each to a status and code once.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The key's role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// No such resource visible to the caller.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request is malformed or a value is out of bounds.
    #[error("{message}")]
    Invalid {
        /// Stable machine-readable code.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A policy component was refused.
    #[error("invalid policy: {0}")]
    InvalidPolicy(String),
    /// The resource is not in a state that allows this (e.g. an escalation already decided).
    #[error("{message}")]
    Conflict {
        /// Stable machine-readable code.
        code: &'static str,
        /// What the state is.
        message: String,
    },
    /// The request conflicts with an earlier one (e.g. an idempotency key reused).
    #[error("{message}")]
    Unprocessable {
        /// Stable machine-readable code.
        code: &'static str,
        /// What the conflict is.
        message: String,
    },
    /// The request, or what it would store, is over a bound.
    #[error("{message}")]
    TooLarge {
        /// Stable machine-readable code.
        code: &'static str,
        /// Which bound.
        message: String,
    },
    /// The tenant has used its share for now; try again after `retry_after_s` seconds.
    #[error("{message}")]
    RateLimited {
        /// Whole seconds until a call would be admitted.
        retry_after_s: u64,
        /// Which limit.
        message: String,
    },
    /// Too many of this kind of operation are running (gateway-wide or for the tenant); try
    /// again after `retry_after_s` seconds. 429 with `code` and Retry-After.
    #[error("{message}")]
    Busy {
        /// Stable machine-readable code, e.g. `too_many_exports`.
        code: &'static str,
        /// Whole seconds to wait before trying again.
        retry_after_s: u64,
        /// Which limit.
        message: String,
    },
    /// The gateway, or this tenant, cannot serve now; nothing was acknowledged.
    #[error("{message}")]
    Unavailable {
        /// Stable machine-readable code.
        code: &'static str,
        /// What is unavailable.
        message: String,
    },
    /// A server the gateway relays to (an upstream MCP server) could not be reached or
    /// answered what the gateway refuses to relay. 502.
    #[error("{message}")]
    BadGateway {
        /// Stable machine-readable code.
        code: &'static str,
        /// What failed.
        message: String,
    },
    /// Something failed inside the gateway; details are logged, not sent.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Result of a gateway operation.
pub type Result<T> = std::result::Result<T, AppError>;

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            // The database cannot be reached or refused the query: nothing was acknowledged.
            StoreError::Postgres(_) => {
                tracing::error!(error = %e, "the store cannot be reached");
                Self::Unavailable {
                    code: "store_unavailable",
                    message: "the store cannot be reached now; nothing was acknowledged".into(),
                }
            }
            e => Self::Internal(Box::new(e)),
        }
    }
}

impl From<AuditError> for AppError {
    fn from(e: AuditError) -> Self {
        match e {
            AuditError::RecordTooLarge { .. } => Self::TooLarge {
                code: "record_too_large",
                message: e.to_string(),
            },
            AuditError::FlushFailed | AuditError::WriteFailed(_) => {
                tracing::error!(error = %e, "the store did not take a record");
                Self::Unavailable {
                    code: "store_unavailable",
                    message:
                        "the audit store cannot make records durable now; nothing was acknowledged"
                            .into(),
                }
            }
            AuditError::Store(e) => e.into(),
            AuditError::RowChanged => Self::Conflict {
                code: "changed_elsewhere",
                message: "another gateway process changed this first; read it again".into(),
            },
            other => Self::Internal(Box::new(other)),
        }
    }
}

impl From<TenantError> for AppError {
    fn from(e: TenantError) -> Self {
        match e {
            TenantError::TenantNotFound => Self::NotFound("tenant"),
            TenantError::KeyNotFound => Self::NotFound("key"),
            TenantError::Invalid(message) => Self::Invalid {
                code: "invalid_request",
                message,
            },
            TenantError::Store(e) => e.into(),
        }
    }
}

impl From<CatalogError> for AppError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Invalid(_) => Self::Invalid {
                code: "invalid_request",
                message: e.to_string(),
            },
            CatalogError::Unresolvable(_) => Self::Invalid {
                code: "unresolvable",
                message: e.to_string(),
            },
            CatalogError::Store(e) => e.into(),
        }
    }
}

impl From<crate::mcp_servers::McpServerError> for AppError {
    fn from(e: crate::mcp_servers::McpServerError) -> Self {
        match e {
            crate::mcp_servers::McpServerError::Invalid(_) => Self::Invalid {
                code: "invalid_request",
                message: e.to_string(),
            },
            crate::mcp_servers::McpServerError::Store(e) => e.into(),
        }
    }
}

impl From<VaultError> for AppError {
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::Invalid(_) => Self::Invalid {
                code: "invalid_request",
                message: e.to_string(),
            },
            other => Self::Internal(Box::new(other)),
        }
    }
}

impl From<PolicyError> for AppError {
    fn from(e: PolicyError) -> Self {
        match e {
            PolicyError::Load(e) => Self::InvalidPolicy(e.to_string()),
            PolicyError::NotFound => Self::NotFound("policy"),
            PolicyError::InvalidName => Self::Invalid {
                code: "invalid_request",
                message: e.to_string(),
            },
            PolicyError::Store(e) => e.into(),
            e @ PolicyError::File { .. } => Self::Internal(Box::new(e)),
        }
    }
}

impl AppError {
    /// A 400-class error with the generic `invalid_request` code.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid {
            code: "invalid_request",
            message: message.into(),
        }
    }

    /// An internal error from any source.
    pub fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(e))
    }
}
