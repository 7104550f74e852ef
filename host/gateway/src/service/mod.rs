//! The gateway's operations, one service per noun. Each takes the capability it needs
//! ([`crate::access`]) and owns its part of the state; [`crate::app::App`] wires them.

pub mod audit;
pub mod catalog;
pub mod checkpoints;
pub mod completion;
pub mod escalations;
pub mod execute;
pub mod jobs;
pub mod mcp;
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

use crate::audit::{Kind, RecordBody};
use crate::tenants::KeyRecord;

/// The record of a configuration change of `kind` made with `key`: its subject is the actor,
/// its id goes into `detail` (a JSON object) with what changed.
pub(crate) fn configuration(kind: Kind, key: &KeyRecord, detail: serde_json::Value) -> RecordBody {
    let serde_json::Value::Object(detail) = detail else {
        unreachable!("configuration details are JSON objects")
    };
    RecordBody::configuration(kind, &key.key_id, &key.subject, detail)
}
