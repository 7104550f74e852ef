//! Signed checkpoints of every tenant's chain: signed as chains grow (every
//! `every_records` records or `every` of time, whichever comes first, and for every grown chain
//! at shutdown), stored per tenant, and served with the key that verifies them. Processes
//! sharing a store sign each checkpoint once: a checkpoint is written only over the one it
//! read (a guarded write), and never over a larger one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::access::{Reviewer, TenantScope};
use crate::audit::{ChainHead, SharedLedger};
use crate::checkpoint::{self, Checkpoint, CheckpointSigner};
use crate::clock::SharedClock;
use crate::error::{AppError, Result};
use crate::store::{Store, Table};

/// Signs and serves checkpoints. Cheap to clone.
#[derive(Clone)]
pub struct CheckpointService {
    pub(crate) audit: SharedLedger,
    pub(crate) store: Store,
    pub(crate) signer: Arc<CheckpointSigner>,
    pub(crate) clock: SharedClock,
    /// Latest checkpoint per tenant: (size, time ms). A std mutex: never held across an await.
    pub(crate) latest: Arc<Mutex<HashMap<String, (u64, u64)>>>,
    /// A chain is checkpointed once it has grown by this many records...
    pub(crate) every_records: u64,
    /// ...or has grown at all and its last checkpoint is this old.
    pub(crate) every: Duration,
}

impl CheckpointService {
    /// The service, knowing each tenant's latest stored checkpoint.
    pub fn load(
        audit: SharedLedger,
        store: Store,
        signer: CheckpointSigner,
        clock: SharedClock,
        tenants: impl IntoIterator<Item = String>,
        every_records: u64,
        every: Duration,
    ) -> Result<Self> {
        let mut latest = HashMap::new();
        for tenant_id in tenants {
            let note = match store.get_raw(Table::Checkpoints, tenant_id.as_bytes()) {
                Ok(note) => note,
                Err(e) => {
                    // Its next checkpoint is signed as if it had none.
                    tracing::error!(tenant = %tenant_id, error = %e, "a stored checkpoint does not read");
                    continue;
                }
            };
            if let Some(note) = note
                && let Ok(cp) =
                    checkpoint::verify(&String::from_utf8_lossy(&note), &signer.public_key())
            {
                latest.insert(tenant_id, (cp.size, cp.time_ms));
            }
        }
        Ok(Self {
            audit,
            store,
            signer: Arc::new(signer),
            clock,
            latest: Arc::new(Mutex::new(latest)),
            every_records,
            every,
        })
    }

    /// How often the signer looks for chains due a checkpoint.
    pub fn tick(&self) -> Duration {
        self.every.min(Duration::from_secs(1))
    }

    /// Signs and stores a checkpoint for every chain that grew since its last one: all of them
    /// when `force`, else those due by the configured cadence. Only flushed heads are signed.
    pub async fn sign_due(&self, force: bool) -> Result<()> {
        let now = self.clock.now_ms();
        let every_ms = self.every.as_millis() as u64;
        let due: Vec<ChainHead> = {
            let last = self.latest.lock().expect("checkpoints lock");
            self.audit
                .heads()
                .into_iter()
                .filter(|head| {
                    let (last_size, last_time) =
                        last.get(&head.tenant_id).copied().unwrap_or((0, 0));
                    head.size > last_size
                        && (force
                            || head.size - last_size >= self.every_records
                            || now.saturating_sub(last_time) >= every_ms)
                })
                .collect()
        };
        if due.is_empty() {
            return Ok(());
        }
        // The heads were read before this flush, so the flush makes them durable.
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.flush())
            .await
            .map_err(AppError::internal)??;
        for ChainHead {
            tenant_id,
            size,
            hash,
        } in due
        {
            let stored = self
                .store
                .get_raw(Table::Checkpoints, tenant_id.as_bytes())?;
            let signed_elsewhere = stored.as_deref().and_then(|note| {
                checkpoint::verify(&String::from_utf8_lossy(note), &self.signer.public_key()).ok()
            });
            if let Some(cp) = signed_elsewhere.filter(|cp| cp.size >= size) {
                // Another process signed this far already.
                self.latest
                    .lock()
                    .expect("checkpoints lock")
                    .insert(tenant_id, (cp.size, cp.time_ms));
                continue;
            }
            let cp = Checkpoint {
                tenant_id: tenant_id.clone(),
                size,
                head_hash: hash,
                time_ms: self.clock.now_ms(),
            };
            let note = self.signer.sign(&cp);
            let key = tenant_id.as_bytes().to_vec();
            match self.store.commit_guarded(
                &[(Table::Checkpoints, key.clone(), note.into_bytes())],
                &[],
                &[(Table::Checkpoints, key, stored)],
            ) {
                Ok(()) => {}
                // Another process signed one meanwhile: this round leaves it be.
                Err(crate::store::StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
            self.latest
                .lock()
                .expect("checkpoints lock")
                .insert(tenant_id, (size, cp.time_ms));
        }
        Ok(())
    }

    /// The tenant's latest stored checkpoint note, if any.
    pub(crate) fn latest(&self, tenant_id: &str) -> Result<Option<String>> {
        Ok(self
            .store
            .get_raw(Table::Checkpoints, tenant_id.as_bytes())?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// The key checkpoints are signed with.
    pub(crate) fn public_key(&self) -> ed25519_dalek::VerifyingKey {
        self.signer.public_key()
    }

    /// The tenant's latest signed checkpoint (a signed note).
    pub fn note(&self, scope: &TenantScope<Reviewer>) -> Result<String> {
        self.latest(scope.tenant_id())?
            .ok_or(AppError::NotFound("checkpoint"))
    }

    /// The checkpoint verifying key: (note verifier key, base64 Ed25519 public key).
    pub fn verifier(&self) -> (String, String) {
        use base64::Engine as _;
        let public = self.signer.public_key();
        (
            checkpoint::verifier_key(&public),
            base64::engine::general_purpose::STANDARD.encode(public.as_bytes()),
        )
    }
}
