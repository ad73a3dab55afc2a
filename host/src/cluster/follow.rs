//! Every host applies the log's records in order, from the one after the position its
//! database stores (so a restart resumes exactly, and the writer's own records, already
//! applied, are skipped by the core).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use carshare_core::Log;
use futures_util::{FutureExt, StreamExt};

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
        if let Err(e) = follow_from_applied(&shared, &log).await {
            tracing::warn!(
                "following the log: {e}; starting again from position {}",
                log.applied()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn follow_from_applied(shared: &Shared, log: &Log) -> Result<(), String> {
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
            Ok(None) => return Err("the consumer ended".into()),
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
                if end > log.applied() {
                    return Err(format!(
                        "no record for {SILENCE:?} while the log holds {} more",
                        end - log.applied()
                    ));
                }
                continue;
            }
        };
        let mut records = vec![first.map_err(|e| e.to_string())?];
        while records.len() < MAX_RECORDS {
            match messages.next().now_or_never() {
                Some(Some(Ok(m))) => records.push(m),
                Some(Some(Err(e))) => return Err(e.to_string()),
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
        log.apply(batch).await.map_err(|e| e.to_string())?;
    }
}
