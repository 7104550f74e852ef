//! The change feed of a PostgreSQL store: each commit that writes rows of tables processes
//! keep in memory sends a `NOTIFY` naming them (with its sender's id, so a process skips its
//! own); a listening connection turns the others' into [`Change`]s, and a lost connection, once
//! made again, into [`Change::Resync`].

use tokio_postgres::NoTls;

use crate::{Change, Table};

/// The channel processes notify each other's caches on.
pub(crate) const CHANNEL: &str = "writ_changes";
/// Largest notification payload sent (PostgreSQL's limit is 8000 bytes).
const MAX_PAYLOAD: usize = 7000;

/// The notifications of a commit's changed rows of cached tables: payloads of at most
/// [`MAX_PAYLOAD`] bytes, each the node's id then one `table hex-key` line per row.
pub(crate) fn notices<'a>(
    node: &str,
    rows: impl Iterator<Item = (Table, &'a [u8])>,
) -> Vec<String> {
    let mut notices = Vec::new();
    let mut current = String::new();
    for (table, key) in rows.filter(|(t, _)| t.is_cached()) {
        let line = format!("\n{} {}", table.name(), hex(key));
        if !current.is_empty() && current.len() + line.len() > MAX_PAYLOAD {
            notices.push(std::mem::take(&mut current));
        }
        if current.is_empty() {
            current.push_str(node);
        }
        current.push_str(&line);
    }
    if !current.is_empty() {
        notices.push(current);
    }
    notices
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Listens for other processes' changes for as long as the store's runtime runs: each row
/// named is sent on `changes`; after the connection is lost and made again, a
/// [`Change::Resync`], as notifications sent meanwhile are lost.
pub(crate) async fn listen(
    config: tokio_postgres::Config,
    node: String,
    changes: tokio::sync::broadcast::Sender<Change>,
    listening: std::sync::mpsc::SyncSender<()>,
) {
    let mut first = true;
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (me, feed) = (node.clone(), changes.clone());
                let reader = tokio::spawn(async move {
                    loop {
                        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                            Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                                deliver(&me, n.payload(), &feed);
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "the PostgreSQL change feed's connection failed");
                                break;
                            }
                            None => break,
                        }
                    }
                });
                if client
                    .batch_execute(&format!("LISTEN {CHANNEL}"))
                    .await
                    .is_ok()
                {
                    if first {
                        let _ = listening.try_send(());
                    } else {
                        let _ = changes.send(Change::Resync);
                    }
                    first = false;
                    let _ = reader.await;
                } else {
                    reader.abort();
                }
            }
            Err(e) => tracing::warn!(error = %e, "connecting the PostgreSQL change feed"),
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// Sends the rows a notification names, unless this process sent it.
fn deliver(node: &str, payload: &str, changes: &tokio::sync::broadcast::Sender<Change>) {
    let mut lines = payload.lines();
    if lines.next() == Some(node) {
        return;
    }
    for line in lines {
        let Some((table, key)) = line.split_once(' ') else {
            continue;
        };
        if let (Some(table), Some(key)) = (Table::from_name(table), unhex(key)) {
            let _ = changes.send(Change::Row(table, key));
        }
    }
}
