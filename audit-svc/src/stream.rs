//! Server streams over a tenant's log: a bounded export of a range, and a live stream that resumes
//! from a sequence number and interleaves each new checkpoint after the entries it covers. The
//! live stream is woken by `NOTIFY strongroom_audit_log` (sent by the sequencer when a batch or a
//! checkpoint commits), with a one-second poll in case a notification is missed.

use std::time::Duration;

use kit::{ApiError, Db, Tenant};
use proto::audit::v1 as pb;
use tokio::sync::{broadcast, mpsc};
use tonic::Status;
use uuid::Uuid;

use crate::store;

/// The channel the sequencer notifies (payload: tenant id) when entries or a checkpoint commit.
pub const CHANNEL: &str = "strongroom_audit_log";
const PAGE: i64 = 1000;
const POLL: Duration = Duration::from_secs(1);

/// Fan-out of log notifications to the open streams.
#[derive(Clone, Debug)]
pub struct Wake(broadcast::Sender<Uuid>);

impl Wake {
    /// A wake that is never notified (streams poll).
    pub fn none() -> Self {
        Self(broadcast::channel(16).0)
    }

    /// Listens on [`CHANNEL`] until `shutdown`, reconnecting after errors.
    pub fn spawn(db: Db, shutdown: kit::server::Shutdown) -> Self {
        let (tx, _) = broadcast::channel(1024);
        let sender = tx.clone();
        let task = tokio::spawn(async move {
            loop {
                let listen = async {
                    let mut listener = sqlx::postgres::PgListener::connect_with(db.control_pool()).await?;
                    listener.listen(CHANNEL).await?;
                    loop {
                        let n = listener.recv().await?;
                        if let Ok(id) = Uuid::parse_str(n.payload()) {
                            let _ = sender.send(id);
                        }
                    }
                    #[allow(unreachable_code)]
                    Ok::<(), sqlx::Error>(())
                };
                if let Err(e) = listen.await {
                    tracing::debug!(error = %e, "audit log listener reconnecting");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let abort = task.abort_handle();
        tokio::spawn(async move {
            shutdown.wait().await;
            abort.abort();
        });
        Self(tx)
    }

    fn subscribe(&self) -> broadcast::Receiver<Uuid> {
        self.0.subscribe()
    }
}

pub type Items = tokio_stream::wrappers::ReceiverStream<Result<pb::StreamItem, Status>>;

fn entry_item(e: pb::Entry) -> pb::StreamItem {
    pb::StreamItem { item: Some(pb::stream_item::Item::Entry(e)) }
}

fn checkpoint_item(c: pb::Checkpoint) -> pb::StreamItem {
    pb::StreamItem { item: Some(pb::stream_item::Item::Checkpoint(c)) }
}

/// Entries `[from, to)` (at most [`PAGE`]).
async fn page(db: &Db, tenant: &Tenant, from: u64, to: u64) -> Result<Vec<pb::Entry>, ApiError> {
    let mut tx = db.begin(tenant).await?;
    let entries = store::log::entries(&mut tx, from, to, PAGE).await?;
    tx.commit().await?;
    Ok(entries)
}

/// The newest checkpoint with `after < tree_size <= upto`.
async fn checkpoint_between(
    db: &Db,
    tenant: &Tenant,
    after: u64,
    upto: u64,
) -> Result<Option<pb::Checkpoint>, ApiError> {
    let mut tx = db.begin(tenant).await?;
    let c = store::checkpoints::newest_between(&mut tx, after, upto).await?;
    tx.commit().await?;
    Ok(c)
}

/// Leaves `[from, to)` of entries pruned beyond retention (below `below`), from the stored level-0
/// nodes; the last pruned entry also carries the chain link of the prune mark.
async fn pruned_page(db: &Db, tenant: &Tenant, from: u64, to: u64) -> Result<Vec<pb::Entry>, ApiError> {
    let mut tx = db.begin(tenant).await?;
    let Some((below, link)) = store::log::prune_mark(&mut tx).await? else {
        tx.commit().await?;
        return Ok(Vec::new());
    };
    let leaves = store::log::kept_leaves(&mut tx, from, to.min(below), PAGE).await?;
    tx.commit().await?;
    Ok(leaves
        .into_iter()
        .map(|(seq, leaf_hash)| pb::Entry {
            seq,
            canonical: Vec::new(),
            leaf_hash: leaf_hash.to_vec(),
            chain_hash: if seq + 1 == below { link.to_vec() } else { Vec::new() },
            pruned: true,
        })
        .collect())
}

/// Sends `entries` to the client; false once it has gone.
async fn send(tx: &mpsc::Sender<Result<pb::StreamItem, Status>>, entries: Vec<pb::Entry>) -> bool {
    for e in entries {
        if tx.send(Ok(entry_item(e))).await.is_err() {
            return false;
        }
    }
    true
}

/// Entries `[from, to)` then `last` (the checkpoint they are proved in). Entries pruned beyond
/// retention come as leaves only (`pruned`), so the export still proves into the checkpoint.
pub fn export(db: Db, tenant: Tenant, from: u64, to: u64, last: pb::Checkpoint) -> Items {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut next = from;
        // The pruned front of the range first, then the entries still in the log.
        for pruned in [true, false] {
            while next < to {
                let entries =
                    if pruned { pruned_page(&db, &tenant, next, to).await } else { page(&db, &tenant, next, to).await };
                let entries = match entries {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                let Some(last_seq) = entries.last().map(|e| e.seq) else { break };
                if !send(&tx, entries).await {
                    return;
                }
                next = last_seq + 1;
            }
        }
        let _ = tx.send(Ok(checkpoint_item(last))).await;
    });
    Items::new(rx)
}

/// Entries from `from` on, forever, with every newer checkpoint once the entries it covers are sent.
pub fn live(db: Db, tenant: Tenant, from: u64, wake: &Wake) -> Items {
    let (tx, rx) = mpsc::channel(16);
    let mut woken = wake.subscribe();
    tokio::spawn(async move {
        let mut next = from;
        // Only checkpoints that cover something sent are interesting.
        let mut sent_checkpoint = from;
        loop {
            let result = async {
                let entries = page(&db, &tenant, next, u64::MAX).await?;
                let got = entries.len();
                next = entries.last().map_or(next, |e| e.seq + 1);
                if !send(&tx, entries).await {
                    return Ok(None);
                }
                let cp = checkpoint_between(&db, &tenant, sent_checkpoint, next).await?;
                let more = got as i64 == PAGE || cp.is_some();
                if let Some(cp) = cp {
                    sent_checkpoint = cp.tree_size;
                    if tx.send(Ok(checkpoint_item(cp))).await.is_err() {
                        return Ok(None);
                    }
                }
                Ok::<_, ApiError>(Some(more))
            }
            .await;
            match result {
                Ok(None) => return,
                Ok(Some(true)) => continue,
                Ok(Some(false)) => {}
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            }
            // Caught up: wait for this tenant's next batch or checkpoint, the client leaving, or the poll.
            let wait = async {
                loop {
                    match woken.recv().await {
                        Ok(id) if id == tenant.id.0 => return,
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => return,
                        Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                    }
                }
            };
            tokio::select! {
                _ = wait => {}
                _ = tx.closed() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    });
    Items::new(rx)
}
