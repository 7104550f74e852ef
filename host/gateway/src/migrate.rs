//! Moving a stopped gateway's sled store into PostgreSQL (`writ store migrate`): every table's
//! rows copied as they are (vault entries still sealed under the same master key), the policy
//! components from `<data-dir>/policies/` into the database, then every tenant's chain verified
//! on the copy and compared with the original's head.

use std::path::Path;

use anyhow::Context as _;
use writ_runtime::engine::Engine;

use crate::store::{PgOptions, Store, Table};
use crate::verify::verify_chain;

/// Rows or bytes copied per transaction, whichever comes first.
const BATCH_ROWS: usize = 1000;
const BATCH_BYTES: usize = 16 << 20;

/// What a migration copied and checked.
#[derive(Debug, Default, serde::Serialize)]
pub struct Migrated {
    /// Rows copied, by table.
    pub rows: Vec<(&'static str, u64)>,
    /// Policy components copied.
    pub components: u64,
    /// Each tenant's chain on the copy: records verified and head seq.
    pub chains: Vec<(String, u64, Option<u64>)>,
}

/// Copies the stopped sled store in `data_dir` into the empty PostgreSQL store at `url`, then
/// verifies every chain there. Refuses a database that already holds a store, or that another
/// process serves.
pub fn sled_to_postgres(data_dir: &Path, url: &str) -> anyhow::Result<Migrated> {
    anyhow::ensure!(
        data_dir.join("db").exists(),
        "no store in {}",
        data_dir.display()
    );
    let from = Store::open(data_dir).with_context(|| {
        format!(
            "opening the store in {} (is the gateway still running? stop it first)",
            data_dir.display()
        )
    })?;
    let scratch = tempfile::tempdir()?;
    let options = PgOptions {
        url: url.to_owned(),
        hold: crate::store::Hold::Alone,
    };
    let to =
        Store::open_postgres(&options, scratch.path()).context("opening the PostgreSQL store")?;
    for table in Table::all() {
        let any = to.iter_prefix_from(*table, b"", b"").next().transpose()?;
        anyhow::ensure!(
            any.is_none(),
            "the database already holds a store (table {} has rows): migrate into an empty one",
            table.name()
        );
    }

    let mut migrated = Migrated::default();
    for table in Table::all() {
        let copied = copy_table(&from, &to, *table)?;
        migrated.rows.push((table.name(), copied));
    }
    migrated.components = copy_components(&data_dir.join("policies"), &to)?;

    for (key, _) in from.scan_raw(Table::Tenants, b"")? {
        let tenant_id = String::from_utf8_lossy(&key).into_owned();
        let original = verify_chain(&from, &tenant_id, None)?;
        let copy = verify_chain(&to, &tenant_id, None)?;
        anyhow::ensure!(
            copy.ok(),
            "tenant {tenant_id}: the copied chain does not verify: {:?}",
            copy.broken
        );
        anyhow::ensure!(
            copy.head == original.head && copy.records == original.records,
            "tenant {tenant_id}: the copy ends at {:?}, the original at {:?}",
            copy.head.map(|h| h.0),
            original.head.map(|h| h.0)
        );
        migrated
            .chains
            .push((tenant_id, copy.records, copy.head.map(|h| h.0)));
    }
    Ok(migrated)
}

fn copy_table(from: &Store, to: &Store, table: Table) -> anyhow::Result<u64> {
    let (mut batch, mut bytes, mut copied) = (Vec::new(), 0, 0u64);
    for row in from.iter_prefix_from(table, b"", b"") {
        let (key, value) = row?;
        bytes += key.len() + value.len();
        batch.push((table, key, value));
        if batch.len() >= BATCH_ROWS || bytes >= BATCH_BYTES {
            to.commit(&batch)?;
            copied += batch.len() as u64;
            (batch, bytes) = (Vec::new(), 0);
        }
    }
    to.commit(&batch)?;
    Ok(copied + batch.len() as u64)
}

/// Copies each `<id>.wasm` whose bytes hash to its id.
fn copy_components(dir: &Path, to: &Store) -> anyhow::Result<u64> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    let mut copied = 0;
    for entry in entries {
        let path = entry?.path();
        let Some(id) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wasm"))
        else {
            continue;
        };
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        anyhow::ensure!(
            Engine::policy_id(&bytes) == id,
            "{}: the component does not hash to its id",
            path.display()
        );
        to.put_raw(Table::Components, id.as_bytes(), &bytes)?;
        copied += 1;
    }
    Ok(copied)
}
