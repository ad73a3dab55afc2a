//! Every host applies the log's records in order, from the one after the position its
//! database stores (so a restart resumes exactly, and the writer's own records, already
//! applied, are skipped by the core). Messages that are not the next record of this log are
//! refused by the core on every host alike, and reported here; a record this host cannot
//! apply (a newer format, a replica out of step), or a log that ends before this replica,
//! stops it: it takes no writes and stands for no lease, and says why.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use carshare_core::{ApplyError, Log};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;

use super::{SUBJECT, Shared};

/// Records applied in one transaction at most, when many are waiting (catching up).
const MAX_RECORDS: usize = 512;

/// How long the consumer may be silent before the log's end is checked.
const SILENCE: Duration = Duration::from_secs(1);

/// Applies the log to `log`, for as long as it runs. An ordered consumer delivers the records
/// in order and recreates itself after a gap or a lost server; if anything else fails, or it
/// falls silent while the log has records this host lacks (seen after the stream's leader
/// changed), it starts again from what the database says it applied.
pub(super) async fn follow(shared: Arc<Shared>, log: Log) {
    loop {
        match follow_from_applied(&shared, &log).await {
            Err(Followed::Stop(reason)) => {
                shared.stop(reason);
                return;
            }
            Err(Followed::Again(e)) => tracing::warn!(
                "following the log: {e}; starting again from position {}",
                log.applied()
            ),
            Ok(()) => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Keeps the cluster's copy of this replica's position current.
pub(super) async fn track_applied(shared: Arc<Shared>, mut applied: watch::Receiver<u64>) {
    loop {
        let now = *applied.borrow_and_update();
        shared.applied.store(now, Ordering::Release);
        if applied.changed().await.is_err() {
            return;
        }
    }
}

/// Why following stopped.
enum Followed {
    /// For good: this host must not go on with this log as it is.
    Stop(String),
    /// For now: start again from what the database says it applied.
    Again(String),
}

impl From<String> for Followed {
    fn from(e: String) -> Self {
        Followed::Again(e)
    }
}

async fn follow_from_applied(shared: &Shared, log: &Log) -> Result<(), Followed> {
    let consumer = shared
        .stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: SUBJECT.into(),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: log.applied() + 1,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    loop {
        let first = match tokio::time::timeout(SILENCE, messages.next()).await {
            Ok(Some(first)) => first,
            Ok(None) => return Err(Followed::Again("the consumer ended".into())),
            Err(_) => {
                // Quiet: fine if the log has nothing new, a stalled consumer if it has.
                let end = shared
                    .stream
                    .get_info()
                    .await
                    .map_err(|e| e.to_string())?
                    .state
                    .last_sequence;
                shared.log_last.fetch_max(end, Ordering::AcqRel);
                let applied = log.applied();
                if end < applied {
                    return Err(Followed::Stop(super::continuity::ahead(applied, end)));
                }
                if end > applied {
                    return Err(Followed::Again(format!(
                        "no record for {SILENCE:?} while the log holds {} more",
                        end - applied
                    )));
                }
                continue;
            }
        };
        let mut records = vec![first.map_err(|e| e.to_string())?];
        while records.len() < MAX_RECORDS {
            match messages.next().now_or_never() {
                Some(Some(Ok(m))) => records.push(m),
                Some(Some(Err(e))) => return Err(Followed::Again(e.to_string())),
                _ => break,
            }
        }
        let mut batch = Vec::with_capacity(records.len());
        for m in records {
            let position = m.info().map_err(|e| e.to_string())?.stream_sequence;
            batch.push((position, m.payload.to_vec()));
        }
        let last = batch.last().map(|(p, _)| *p).unwrap_or(0);
        shared.log_last.fetch_max(last, Ordering::AcqRel);
        match log.apply(batch).await {
            Ok(applied) => shared.refused(applied.refused),
            Err(ApplyError::Storage(e)) => return Err(Followed::Again(e.to_string())),
            Err(e) => return Err(Followed::Stop(e.to_string())),
        }
    }
}
