//! Route handlers, one module per noun: extract input, call one service operation, shape the
//! answer. No policy, audit or storage logic lives here.

mod admin;
mod audit;
mod catalog;
mod escalations;
mod execute;
mod mcp;
mod ops;
mod policies;

pub use admin::*;
pub use audit::*;
pub use catalog::*;
pub use escalations::*;
pub use execute::*;
pub use mcp::*;
pub use ops::*;
pub use policies::*;
