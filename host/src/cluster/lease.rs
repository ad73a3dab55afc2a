//! Who writes: the host holding the key `writer` of the bucket `carshare_lease`, whose
//! entries expire after `LEASE_TTL` unless renewed. A host takes the key when it is free (a
//! create that fails if it exists), renews it every `LEASE_RENEW` with the revision it last
//! wrote (so it cannot renew a lease another host took meanwhile), and writes only once it
//! has applied the whole log. Two hosts may both believe they write for a moment (a paused
//! holder); the log's fencing, not the lease, keeps them from both appending.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{Operation, UpdateErrorKind};
use carshare_core::Log;

use super::{LEASE_RENEW, LEASE_TTL, Shared};

const WRITER_KEY: &str = "writer";

/// How often the task looks at the lease and at how far this host has applied the log.
const TICK: Duration = Duration::from_millis(100);

/// Takes, renews and follows the lease, and says when this host may write.
pub(super) async fn hold(shared: Arc<Shared>, log: Log) {
    let mut held: Option<u64> = None;
    let mut renewed = Instant::now();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match held {
            Some(revision) if renewed.elapsed() >= LEASE_RENEW => {
                match shared
                    .lease
                    .update(WRITER_KEY, shared.host.clone().into(), revision)
                    .await
                {
                    Ok(r) => {
                        held = Some(r);
                        renewed = Instant::now();
                    }
                    // The bucket is electing a leader (or this host cannot reach it): no
                    // other host can take the lease meanwhile, so keep writing until it
                    // would have expired.
                    Err(e)
                        if e.kind() != UpdateErrorKind::WrongLastRevision
                            && renewed.elapsed() < LEASE_TTL - LEASE_RENEW =>
                    {
                        tracing::debug!("cannot renew the writer's lease yet: {e}");
                    }
                    Err(e) => {
                        tracing::warn!("lost the writer's lease: {e}");
                        held = None;
                        shared.writer.store(false, Ordering::Release);
                        shared.state.lock().unwrap_or_else(|p| p.into_inner()).catching_up = None;
                    }
                }
            }
            Some(_) => {}
            None => {
                if let Ok(r) = shared.lease.create(WRITER_KEY, shared.host.clone().into()).await {
                    held = Some(r);
                    renewed = Instant::now();
                    shared.epoch.fetch_add(1, Ordering::AcqRel);
                    tracing::info!("took the writer's lease; applying the log to its end first");
                    shared.state.lock().unwrap_or_else(|p| p.into_inner()).behind = true;
                }
            }
        }
        if held.is_some() {
            catch_up_then_write(&shared, &log).await;
            shared.state.lock().unwrap_or_else(|p| p.into_inner()).writer_host = Some(shared.host.clone());
        } else {
            let writer = match shared.lease.entry(WRITER_KEY).await {
                Ok(Some(e)) if e.operation == Operation::Put => String::from_utf8(e.value.to_vec()).ok(),
                Ok(_) => None,
                // Unreachable for now: keep the last writer seen, units to it fail soon enough.
                Err(_) => continue,
            };
            shared.state.lock().unwrap_or_else(|p| p.into_inner()).writer_host = writer;
        }
    }
}

/// While this host holds the lease: once it has applied the log up to the end it last read,
/// it writes. When it fell behind (it just took the lease, or an append was fenced or left in
/// doubt), it reads the log's end anew first.
async fn catch_up_then_write(shared: &Shared, log: &Log) {
    let behind = std::mem::take(&mut shared.state.lock().unwrap_or_else(|p| p.into_inner()).behind);
    if behind {
        shared.writer.store(false, Ordering::Release);
        // Briefly: this task renews the lease too, and the log may be electing a leader.
        match tokio::time::timeout(TICK * 10, shared.stream.get_info()).await {
            Err(_) => {
                shared.state.lock().unwrap_or_else(|p| p.into_inner()).behind = true;
                return;
            }
            Ok(Ok(info)) => {
                let end = info.state.last_sequence;
                shared.log_last.fetch_max(end, Ordering::AcqRel);
                shared.state.lock().unwrap_or_else(|p| p.into_inner()).catching_up = Some(end);
            }
            Ok(Err(e)) => {
                tracing::warn!("cannot read the log's end: {e}");
                shared.state.lock().unwrap_or_else(|p| p.into_inner()).behind = true;
                return;
            }
        }
    }
    let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(end) = state.catching_up
        && log.applied() >= end
    {
        state.catching_up = None;
        shared.writer.store(true, Ordering::Release);
        tracing::info!("writing the log from position {}", log.applied() + 1);
    }
}

/// Hands the lease back if this host holds it, so that another takes over at once.
pub(super) async fn release(shared: &Shared) {
    if let Ok(Some(e)) = shared.lease.entry(WRITER_KEY).await
        && e.operation == Operation::Put
        && e.value.as_ref() == shared.host.as_bytes()
    {
        let _ = shared
            .lease
            .delete_expect_revision(WRITER_KEY, Some(e.revision))
            .await;
    }
}
