//! The gateway's operations, one service per noun. Each takes the capability it needs
//! ([`crate::access`]) and owns its part of the state; [`crate::app::App`] wires them.

pub mod audit;
pub mod catalog;
pub mod checkpoints;
pub mod escalations;
pub mod execute;
pub mod jobs;
pub mod policies;
pub mod tenants;

pub use audit::AuditService;
pub use catalog::CatalogService;
pub use checkpoints::CheckpointService;
pub use escalations::EscalationService;
pub use execute::ExecuteService;
pub use jobs::JobService;
pub use policies::PolicyService;
pub use tenants::TenantService;
