//! `Idempotency-Key` on `POST /v1/execute`: the whole call happens at most once per (tenant,
//! key) within 24 hours, and a repeat gets the first answer, status and body as sent. Here, in
//! the API layer, because what it stores is an HTTP answer.
//!
//! Across processes sharing a store, the first request claims the key with a guarded write
//! (the row must still be what it read, absent at first) before it runs; a repeat that finds a
//! claim waits for the answer. A claim left by a process that died is taken over after
//! [`CLAIM_MS`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::access::{Agent, TenantScope};
use crate::clock::SharedClock;
use crate::error::{AppError, Result};
use crate::store::{Store, Table};
use crate::tenants::tenant_key;

/// How long a key's answer is kept.
const KEPT_MS: u64 = 24 * 3600 * 1000;
/// How long a claim stands without its answer before another request may take the key over.
const CLAIM_MS: u64 = 60 * 1000;
/// How often a repeat looks again for the answer to a claim made elsewhere.
const CLAIM_POLL: std::time::Duration = std::time::Duration::from_millis(25);

/// A lock serializing the requests of one idempotency key.
type KeyLock = Arc<tokio::sync::Mutex<()>>;

/// The first answer to an idempotency key.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct IdempotentAnswer {
    fingerprint: String,
    status: u16,
    body: String,
    created_ms: u64,
    /// A claim: the first request is running (somewhere), its answer not stored yet.
    #[serde(default)]
    running: bool,
}

/// The stored answers and the per-key locks. Shared by every request.
pub struct Idempotency {
    store: Store,
    clock: SharedClock,
    /// Per (tenant, idempotency key) locks, so concurrent repeats wait for the first.
    locks: Mutex<HashMap<(String, String), KeyLock>>,
}

/// Holds one key's lock entry; removes it when the last request using it is done, whichever
/// way that request ends (an answer, an error, or the client going away).
struct Entry<'a> {
    map: &'a Mutex<HashMap<(String, String), KeyLock>>,
    key: (String, String),
    lock: Option<KeyLock>,
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        let mut locks = self.map.lock().unwrap_or_else(|e| e.into_inner());
        drop(self.lock.take());
        if locks
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            locks.remove(&self.key);
        }
    }
}

impl Idempotency {
    /// Answers kept in `store`, aged by `clock`.
    pub fn new(store: Store, clock: SharedClock) -> Self {
        Self {
            store,
            clock,
            locks: Mutex::default(),
        }
    }

    /// Runs `run` at most once per (tenant, `key`) within 24 hours: a repeat with the same
    /// `fingerprint` gets the stored answer without running again; with another fingerprint,
    /// a conflict (422). Concurrent repeats wait for the first. The first answer is durable
    /// before this returns, and with it what `run` handed back to act on after (a job to
    /// start); a repeat gets `None`.
    pub async fn run<F, T>(
        &self,
        scope: &TenantScope<Agent>,
        key: &str,
        fingerprint: &str,
        run: F,
    ) -> Result<(u16, String, Option<T>)>
    where
        F: std::future::Future<Output = Result<(u16, String, T)>>,
    {
        if !crate::valid_name(key) {
            return Err(AppError::invalid(
                "Idempotency-Key must be 1 to 256 printable characters",
            ));
        }
        let tenant_id = scope.tenant_id();
        let map_key = (tenant_id.to_owned(), key.to_owned());
        let lock = self
            .locks
            .lock()
            .expect("idempotency lock")
            .entry(map_key.clone())
            .or_default()
            .clone();
        let entry = Entry {
            map: &self.locks,
            key: map_key,
            lock: Some(lock),
        };
        let _first = entry.lock.as_ref().expect("held until drop").lock().await;
        let row = tenant_key(tenant_id, &[key.as_bytes()]);
        let claim = loop {
            let raw = self.store.get_raw(Table::Idempotency, &row)?;
            let stored: Option<IdempotentAnswer> =
                raw.as_deref().and_then(|r| serde_json::from_slice(r).ok());
            let now = self.clock.now_ms();
            match stored {
                Some(s)
                    if s.fingerprint != fingerprint
                        && now.saturating_sub(s.created_ms) < KEPT_MS =>
                {
                    return Err(AppError::Unprocessable {
                        code: "idempotency_key_reused",
                        message: "this Idempotency-Key was used with a different request".into(),
                    });
                }
                Some(s) if !s.running && now.saturating_sub(s.created_ms) < KEPT_MS => {
                    return Ok((s.status, s.body, None));
                }
                Some(s) if s.running && now.saturating_sub(s.created_ms) < CLAIM_MS => {
                    // The first request runs in another process: its answer is coming.
                    tokio::time::sleep(CLAIM_POLL).await;
                }
                _ => {
                    let claim = IdempotentAnswer {
                        fingerprint: fingerprint.to_owned(),
                        status: 0,
                        body: String::new(),
                        created_ms: now,
                        running: true,
                    };
                    let bytes = serde_json::to_vec(&claim).expect("answers serialize");
                    let claimed = self.store.commit_guarded(
                        &[(Table::Idempotency, row.clone(), bytes.clone())],
                        &[],
                        &[(Table::Idempotency, row.clone(), raw)],
                    );
                    match claimed {
                        Ok(()) => break bytes,
                        Err(crate::store::StoreError::Conflict(_)) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        };
        let ran = run.await;
        let (status, body, then) = match ran {
            Ok(answer) => answer,
            Err(e) => {
                // Nothing to repeat: the key is free again (unless taken over).
                let _ = self.store.commit_guarded(
                    &[],
                    &[(Table::Idempotency, row.clone())],
                    &[(Table::Idempotency, row.clone(), Some(claim))],
                );
                return Err(e);
            }
        };
        let answer = IdempotentAnswer {
            fingerprint: fingerprint.to_owned(),
            status,
            body: body.clone(),
            created_ms: self.clock.now_ms(),
            running: false,
        };
        self.store.put(Table::Idempotency, &row, &answer)?;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.flush())
            .await
            .map_err(AppError::internal)?
            .map_err(|e| {
                tracing::error!(error = %e, "an idempotent answer could not be made durable");
                AppError::Unavailable {
                    code: "store_unavailable",
                    message:
                        "the answer could not be made durable; the decision stands in the audit log"
                            .into(),
                }
            })?;
        Ok((status, body, Some(then)))
    }

    /// Keys with a lock entry now (requests in flight on them).
    #[cfg(test)]
    fn entries(&self) -> usize {
        self.locks.lock().expect("idempotency lock").len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::access::Require;
    use crate::tenants::{KeyRecord, Role};

    fn agent() -> TenantScope<Agent> {
        let key = Arc::new(KeyRecord {
            key_id: "key_1".into(),
            tenant_id: Some("ten_a".into()),
            role: Role::Agent,
            subject: "bot".into(),
            agent_id: None,
            created_ms: 0,
            revoked: false,
        });
        key.require().unwrap()
    }

    #[tokio::test]
    async fn a_key_is_released_whether_its_call_succeeds_or_fails() {
        let dir = tempfile::tempdir().unwrap();
        let idempotency = Idempotency::new(
            Store::open(dir.path()).unwrap(),
            crate::clock::ManualClock::new(1_000),
        );
        let scope = agent();
        let failed = idempotency
            .run(&scope, "k1", "f", async {
                Err::<(u16, String, ()), _>(AppError::invalid("downstream refused"))
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(idempotency.entries(), 0);
        let answered = idempotency
            .run(&scope, "k2", "f", async { Ok((200, "{}".to_owned(), ())) })
            .await
            .unwrap();
        assert_eq!(answered, (200, "{}".to_owned(), Some(())));
        assert_eq!(idempotency.entries(), 0);
    }

    #[tokio::test]
    async fn a_stored_answer_is_replayed_and_expires_after_a_day() {
        let dir = tempfile::tempdir().unwrap();
        let clock = crate::clock::ManualClock::new(1_000);
        let idempotency = Idempotency::new(Store::open(dir.path()).unwrap(), clock.clone());
        let scope = agent();
        let first = idempotency
            .run(&scope, "k", "f", async {
                Ok((202, "first".to_owned(), ()))
            })
            .await
            .unwrap();
        let repeat = idempotency
            .run(&scope, "k", "f", async {
                Ok((200, "second".to_owned(), ()))
            })
            .await
            .unwrap();
        assert_eq!((repeat.0, repeat.1), (first.0, first.1));
        assert_eq!(repeat.2, None, "a repeat has nothing to act on");
        let reused = idempotency
            .run(&scope, "k", "other", async {
                Ok((200, "x".to_owned(), ()))
            })
            .await;
        assert!(matches!(
            reused,
            Err(AppError::Unprocessable {
                code: "idempotency_key_reused",
                ..
            })
        ));
        clock.advance(KEPT_MS);
        let later = idempotency
            .run(&scope, "k", "other", async {
                Ok((200, "fresh".to_owned(), ()))
            })
            .await
            .unwrap();
        assert_eq!(later.1, "fresh");
    }
}
