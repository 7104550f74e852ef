//! What `writ` does with a store no gateway is serving: `writ audit verify|export` (read-only)
//! and `writ store migrate` (sled to PostgreSQL).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::{Value, json};

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Recompute every hash; prints one JSON line per tenant; exits 1 if any chain is broken.
    Verify {
        /// The stopped gateway's data directory.
        #[arg(long, env = "WRIT_DATA_DIR", default_value = "./writ-data")]
        data_dir: PathBuf,
        /// Read the chains from this PostgreSQL store instead (it may be serving meanwhile).
        #[arg(long = "store", env = "WRIT_STORE_URL", hide_env_values = true)]
        store_url: Option<String>,
        /// Only this tenant (default: the checkpoint's tenant, else every tenant).
        #[arg(long)]
        tenant: Option<String>,
        /// A signed checkpoint the chain must still contain (detects truncation and rewrite).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// The verifier key (`writ+…`, from GET /v1/audit/public-key); default: the data
        /// directory's checkpoint.key.
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Write a tenant's chain as JSON Lines to standard output.
    Export {
        /// The stopped gateway's data directory.
        #[arg(long, env = "WRIT_DATA_DIR", default_value = "./writ-data")]
        data_dir: PathBuf,
        /// Read the chain from this PostgreSQL store instead (it may be serving meanwhile).
        #[arg(long = "store", env = "WRIT_STORE_URL", hide_env_values = true)]
        store_url: Option<String>,
        #[arg(long)]
        tenant: String,
        /// Only records with a greater seq.
        #[arg(long)]
        after_seq: Option<u64>,
    },
}

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Copy a stopped gateway's sled store into an empty PostgreSQL store (tables, policy
    /// components; vault entries stay sealed under the same master key), then verify every
    /// chain there. Prints one JSON line per table and per tenant.
    Migrate {
        /// The stopped gateway's data directory.
        #[arg(long)]
        from_data_dir: PathBuf,
        /// The PostgreSQL store (`postgres://user@host:port/db`).
        #[arg(long, env = "WRIT_STORE_URL", hide_env_values = true)]
        to: String,
    },
}

/// `writ audit verify|export` on a stopped store.
pub fn audit(command: AuditCommand) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    use writ_gateway::checkpoint;
    use writ_gateway::store::Table;
    match command {
        AuditCommand::Verify {
            data_dir,
            store_url,
            tenant,
            checkpoint: checkpoint_file,
            public_key,
        } => {
            let (store, _scratch) = open_for_reading(&data_dir, store_url.as_deref())?;
            let cp = match &checkpoint_file {
                Some(path) => {
                    let note = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    // Read-only: the data dir's key is read, never created.
                    let public = match &public_key {
                        Some(vkey) => checkpoint::parse_verifier_key(vkey)?,
                        None => checkpoint::CheckpointSigner::load(&data_dir)?.public_key(),
                    };
                    match checkpoint::verify(&note, &public) {
                        Ok(cp) => Some(cp),
                        Err(e) => {
                            println!(
                                "{}",
                                json!({"ok": false, "problem": "bad_checkpoint", "detail": e.to_string()})
                            );
                            return Ok(ExitCode::FAILURE);
                        }
                    }
                }
                None => None,
            };
            let tenants: Vec<String> = match (tenant, &cp) {
                (Some(t), _) => vec![t],
                (None, Some(cp)) => vec![cp.tenant_id.clone()],
                (None, None) => store
                    .scan::<Value>(Table::Tenants, b"")?
                    .into_iter()
                    .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
                    .collect(),
            };
            let mut all_ok = true;
            for tenant_id in tenants {
                let cp = cp.as_ref().filter(|c| c.tenant_id == tenant_id);
                let v = writ_gateway::verify::verify_chain(&store, &tenant_id, cp)?;
                all_ok &= v.ok();
                println!(
                    "{}",
                    json!({
                        "tenant_id": tenant_id,
                        "ok": v.ok(),
                        "records": v.records,
                        "head_seq": v.head.map(|(s, _)| s),
                        "head_hash": v.head.map(|(_, h)| hex::encode(h)),
                        "checkpoint_size": cp.map(|c| c.size),
                        "broken_seq": v.broken.as_ref().map(|b| b.seq),
                        "problem": v.broken.as_ref().map(|b| b.problem.code()),
                        "detail": v.broken.as_ref().map(|b| b.detail.clone()),
                    })
                );
            }
            Ok(if all_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        AuditCommand::Export {
            data_dir,
            store_url,
            tenant,
            after_seq,
        } => {
            let (store, _scratch) = open_for_reading(&data_dir, store_url.as_deref())?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut failed = None;
            writ_gateway::verify::export(&store, &tenant, after_seq, |line| {
                match out.write_all(line).and_then(|()| out.write_all(b"\n")) {
                    Ok(()) => true,
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                }
            })?;
            if let Some(e) = failed {
                return Err(e.into());
            }
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The store to read chains from: PostgreSQL at `url` (with a scratch directory for its local
/// files, kept as long as the store), else the stopped sled store in `data_dir`.
fn open_for_reading(
    data_dir: &std::path::Path,
    url: Option<&str>,
) -> anyhow::Result<(writ_gateway::store::Store, Option<tempfile::TempDir>)> {
    let Some(url) = url else {
        return Ok((open_stopped_store(data_dir)?, None));
    };
    let scratch = tempfile::tempdir()?;
    let options = writ_gateway::store::PgOptions {
        url: url.to_owned(),
        hold: writ_gateway::store::Hold::Nothing,
    };
    let store = writ_gateway::store::Store::open_postgres(&options, scratch.path())
        .context("opening the PostgreSQL store")?;
    Ok((store, Some(scratch)))
}

/// `writ store migrate`.
pub fn store(command: StoreCommand) -> anyhow::Result<ExitCode> {
    match command {
        StoreCommand::Migrate { from_data_dir, to } => {
            let migrated = writ_gateway::migrate::sled_to_postgres(&from_data_dir, &to)?;
            for (table, rows) in &migrated.rows {
                println!("{}", json!({"table": table, "rows": rows}));
            }
            println!("{}", json!({"components": migrated.components}));
            for (tenant_id, records, head_seq) in &migrated.chains {
                println!(
                    "{}",
                    json!({"tenant_id": tenant_id, "ok": true, "records": records, "head_seq": head_seq})
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn open_stopped_store(data_dir: &std::path::Path) -> anyhow::Result<writ_gateway::store::Store> {
    anyhow::ensure!(
        data_dir.join("db").exists(),
        "no store in {}",
        data_dir.display()
    );
    writ_gateway::store::Store::open(data_dir).with_context(|| {
        format!(
            "opening the store in {} (is the gateway still running? stop it first)",
            data_dir.display()
        )
    })
}
