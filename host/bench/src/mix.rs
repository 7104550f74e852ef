//! The call mix: the kinds of call the load sends, their bodies, and their weights.

use std::collections::BTreeMap;
use std::str::FromStr;

use bytes::Bytes;
use serde::Serialize;
use serde_json::json;

use crate::{BenchError, Result};

/// A kind of call in the load mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallKind {
    /// `payments.initiate` under the limit in a pre-approved currency (ALLOW under
    /// payments-limits).
    Payment,
    /// `email.send` (ALLOW).
    Email,
    /// An action the policy does not know (BLOCK `action_not_allowed`).
    Unknown,
    /// A payment over the limit, sent with `?wait=0` (ESCALATE, not held).
    OverLimit,
}

/// Pre-approved currencies the payments rotate over.
const CURRENCIES: [&str; 3] = ["GBP", "EUR", "USD"];

impl CallKind {
    const ALL: [Self; 4] = [Self::Payment, Self::Email, Self::Unknown, Self::OverLimit];

    fn name(self) -> &'static str {
        match self {
            Self::Payment => "payment",
            Self::Email => "email",
            Self::Unknown => "unknown",
            Self::OverLimit => "over_limit",
        }
    }

    /// The request path and body of the `i`th call of this kind on connection `conn`.
    pub(crate) fn request(self, conn: usize, i: usize) -> (&'static str, Bytes) {
        let (path, action, parameters) = match self {
            Self::Payment => (
                "/v1/gateway/execute",
                "payments.initiate",
                json!({
                    "amount": 1 + (i * 37) % 499,
                    "currency": CURRENCIES[i % 3],
                    "recipient_id": format!("rec_{:06}", i % 1000),
                }),
            ),
            Self::Email => (
                "/v1/gateway/execute",
                "email.send",
                json!({
                    "to": format!("customer{i}@example.com"),
                    "subject": format!("Invoice {i}"),
                    "body": "Please find your invoice attached.",
                }),
            ),
            Self::Unknown => (
                "/v1/gateway/execute",
                "github.repos.delete",
                json!({"owner": "acme", "repo": format!("repo-{i}")}),
            ),
            Self::OverLimit => (
                "/v1/gateway/execute?wait=0",
                "payments.initiate",
                json!({
                    "amount": 501 + (i * 97) % 9000,
                    "currency": "GBP",
                    "recipient_id": format!("rec_{:06}", i % 1000),
                }),
            ),
        };
        let body = json!({
            "session_id": format!("bench-{conn}-{}", i % 16),
            "agent_id": format!("bench-agent-{conn}"),
            "action": action,
            "decision": "ALLOW",
            "parameters": parameters,
        });
        (path, Bytes::from(body.to_string()))
    }
}

/// Relative weights of the call kinds, e.g. `payment=70,email=15,unknown=10,over_limit=5`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mix(BTreeMap<CallKind, u32>);

impl Default for Mix {
    fn default() -> Self {
        "payment=70,email=15,unknown=10,over_limit=5"
            .parse()
            .expect("the default mix parses")
    }
}

impl FromStr for Mix {
    type Err = BenchError;

    fn from_str(s: &str) -> Result<Self> {
        let mut weights = BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part.split_once('=').ok_or_else(|| {
                BenchError::Invalid(format!("mix entry `{part}`: want kind=weight"))
            })?;
            let kind = CallKind::ALL
                .into_iter()
                .find(|k| k.name() == name.trim())
                .ok_or_else(|| {
                    BenchError::Invalid(format!(
                        "mix kind `{name}`: want payment, email, unknown or over_limit"
                    ))
                })?;
            let weight: u32 = weight
                .trim()
                .parse()
                .ok()
                .filter(|w| *w <= 1000)
                .ok_or_else(|| {
                    BenchError::Invalid(format!("mix weight `{weight}`: want 0..=1000"))
                })?;
            weights.insert(kind, weight);
        }
        if weights.values().all(|w| *w == 0) {
            return Err(BenchError::Invalid("the mix has no weight".into()));
        }
        Ok(Self(weights))
    }
}

impl Mix {
    /// One cycle of the mix, interleaved (smooth weighted round robin), so a short run still
    /// sees every kind in proportion.
    pub(crate) fn cycle(&self) -> Vec<CallKind> {
        let total: i64 = self.0.values().map(|w| i64::from(*w)).sum();
        let mut current: BTreeMap<CallKind, i64> = self.0.keys().map(|k| (*k, 0)).collect();
        (0..total)
            .map(|_| {
                for (kind, c) in current.iter_mut() {
                    *c += i64::from(self.0[kind]);
                }
                let (&kind, _) = current
                    .iter()
                    .max_by_key(|(k, c)| (**c, std::cmp::Reverse(**k)))
                    .expect("the mix has kinds");
                *current.get_mut(&kind).expect("present") -= total;
                kind
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parses_and_interleaves_in_proportion() {
        let mix: Mix = "payment=3,email=1".parse().unwrap();
        let cycle = mix.cycle();
        assert_eq!(cycle.len(), 4);
        assert_eq!(cycle.iter().filter(|k| **k == CallKind::Payment).count(), 3);
        // Interleaved, not all payments first.
        assert_ne!(cycle.last(), Some(&CallKind::Email));
        let default = Mix::default().cycle();
        assert_eq!(default.len(), 100);
        assert_eq!(
            default
                .iter()
                .filter(|k| **k == CallKind::OverLimit)
                .count(),
            5
        );
        for bad in [
            "",
            "payment",
            "payment=x",
            "bogus=1",
            "payment=0",
            "payment=1001",
        ] {
            assert!(bad.parse::<Mix>().is_err(), "{bad}");
        }
    }
}
