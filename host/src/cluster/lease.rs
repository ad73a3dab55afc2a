//! Who writes: the host holding the key `writer` of the bucket `carshare_lease`, whose
//! entries expire after `LEASE_TTL` unless renewed. A host takes the key when it is free (a
//! create that fails if it exists), renews it every `LEASE_RENEW` with the revision it last
//! wrote (so it cannot renew a lease another host took meanwhile), and writes only once it
//! has applied the whole log. Two hosts may both believe they write for a moment (a paused
//! holder); the log's fencing, not the lease, keeps them from both appending.
//!
//! Only a host fit to write stands for the lease: one that has applied the log to within a
//! few records of its end (a host far behind would hold every write up while it replays), whose
//! storage commits, that has not stopped applying the log, that has not just stepped down, and
//! while no host present reads only an older format of the log than this one writes. A writer
//! that stops being fit hands the lease back at once, so another takes over within seconds
//! instead of the cluster's writes stopping behind it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{Operation, UpdateErrorKind};
use carshare_core::{FORMAT, Log};

use super::{LEASE_RENEW, LEASE_TTL, Shared, presence};

const WRITER_KEY: &str = "writer";

/// How often the task looks at the lease and at how far this host has applied the log.
const TICK: Duration = Duration::from_millis(100);

/// Records a host may still have to apply when it stands for the lease.
const MAX_LAG: u64 = 64;

/// How long a host that stepped down does not stand for the lease.
pub(super) const REST: Duration = Duration::from_secs(10);

/// How often a host that is otherwise fit reads who is present (for their formats).
const FORMATS_EVERY: Duration = Duration::from_secs(5);

/// How often a host reads where the log ends: a host far behind learns it from the records
/// it is delivered only as fast as it applies them.
const END_EVERY: Duration = Duration::from_secs(1);

/// Takes, renews and follows the lease, and says when this host may write.
pub(super) async fn hold(shared: Arc<Shared>, log: Log) {
    let mut held: Option<u64> = None;
    let mut renewed = Instant::now();
    let mut formats = Formats::default();
    let mut end_read = Instant::now() - END_EVERY;
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if end_read.elapsed() >= END_EVERY {
            end_read = Instant::now();
            if let Ok(Ok(info)) = tokio::time::timeout(TICK * 5, shared.stream.get_info()).await {
                shared
                    .log_last
                    .fetch_max(info.state.last_sequence, Ordering::AcqRel);
            }
        }
        let unfit = unfit(&shared, &log, &mut formats).await;
        shared.state().unfit = unfit.clone();
        match (held, unfit) {
            (Some(revision), Some(why)) => {
                tracing::warn!("handing the writer's lease back: {why}");
                give_up(&shared, revision).await;
                held = None;
            }
            (Some(revision), None) if renewed.elapsed() >= LEASE_RENEW => {
                held = renew(&shared, revision, renewed).await;
                if held.is_some_and(|r| r != revision) {
                    renewed = Instant::now();
                }
            }
            (Some(_), None) => {}
            (None, Some(_)) => {}
            (None, None) => {
                if let Ok(r) = shared.lease.create(WRITER_KEY, shared.host.clone().into()).await {
                    held = Some(r);
                    renewed = Instant::now();
                    shared.epoch.fetch_add(1, Ordering::AcqRel);
                    tracing::info!("took the writer's lease; applying the log to its end first");
                    shared.state().behind = true;
                }
            }
        }
        if held.is_some() {
            catch_up_then_write(&shared, &log).await;
            shared.state().writer_host = Some(shared.host.clone());
        } else {
            shared.writer.store(false, Ordering::Release);
            shared.state().catching_up = None;
            let writer = match shared.lease.entry(WRITER_KEY).await {
                Ok(Some(e)) if e.operation == Operation::Put => String::from_utf8(e.value.to_vec()).ok(),
                Ok(_) => None,
                // Unreachable for now: keep the last writer seen, units to it fail soon enough.
                Err(_) => continue,
            };
            shared.state().writer_host = writer;
        }
    }
}

/// Renews the lease held at `revision`; returns the new revision, the old one while the
/// bucket cannot be reached (for a while), or `None` once the lease is lost.
async fn renew(shared: &Shared, revision: u64, renewed: Instant) -> Option<u64> {
    match shared
        .lease
        .update(WRITER_KEY, shared.host.clone().into(), revision)
        .await
    {
        Ok(r) => Some(r),
        // The bucket is electing a leader (or this host cannot reach it): no other host can
        // take the lease meanwhile, so keep writing until it would have expired.
        Err(e)
            if e.kind() != UpdateErrorKind::WrongLastRevision
                && renewed.elapsed() < LEASE_TTL - LEASE_RENEW =>
        {
            tracing::debug!("cannot renew the writer's lease yet: {e}");
            Some(revision)
        }
        Err(e) => {
            tracing::warn!("lost the writer's lease: {e}");
            shared.writer.store(false, Ordering::Release);
            shared.state().catching_up = None;
            None
        }
    }
}

/// Stops writing and hands the lease held at `revision` back.
async fn give_up(shared: &Shared, revision: u64) {
    shared.writer.store(false, Ordering::Release);
    shared.state().catching_up = None;
    if let Err(e) = shared
        .lease
        .delete_expect_revision(WRITER_KEY, Some(revision))
        .await
    {
        tracing::warn!("cannot hand the writer's lease back (it expires in {LEASE_TTL:?}): {e}");
    }
}

/// What this host last learnt of the formats the hosts present read.
#[derive(Default)]
struct Formats {
    read_at: Option<Instant>,
    /// A host present that reads only an older format than this one writes, and which.
    older: Option<(String, u32)>,
}

/// Why this host must not stand for (or keep) the lease now, if it must not.
async fn unfit(shared: &Shared, log: &Log, formats: &mut Formats) -> Option<String> {
    if let Some(why) = stopped_or_resting(shared) {
        return Some(why);
    }
    if !log.is_open() {
        return Some("this host's log is closed or its commit thread has stopped".into());
    }
    if let Some(e) = log.storage_failure() {
        return Some(format!("this host's storage failed: {e}"));
    }
    if !shared.verified.load(Ordering::Acquire) {
        return Some("this host's data has not been checked against the log yet".into());
    }
    let (applied, last) = (log.applied(), shared.log_last.load(Ordering::Acquire));
    if applied + MAX_LAG < last {
        return Some(format!(
            "this host has {} records of the log still to apply",
            last - applied
        ));
    }
    if formats.read_at.is_none_or(|at| at.elapsed() >= FORMATS_EVERY) {
        formats.read_at = Some(Instant::now());
        if let Ok(hosts) = presence::all(&shared.presence).await {
            formats.older = hosts
                .into_iter()
                .find(|p| p.reads < FORMAT)
                .map(|p| (p.host, p.reads));
        }
    }
    formats.older.as_ref().map(|(host, reads)| {
        format!(
            "host {host} reads records up to format {reads}, and this host writes format \
             {FORMAT}: upgrade {host} first"
        )
    })
}

/// Why this host must not write for a while: it stopped applying the log, or stepped down.
fn stopped_or_resting(shared: &Shared) -> Option<String> {
    let state = shared.state();
    if let Some(stopped) = &state.stopped {
        return Some(format!("this host stopped applying the log: {stopped}"));
    }
    match state.resting_until {
        Some(until) if Instant::now() < until => {
            Some("this host stepped down as the writer a moment ago".into())
        }
        _ => None,
    }
}

/// While this host holds the lease: once it has applied the log up to the end it last read,
/// it writes. When it fell behind (it just took the lease, or an append was fenced or left in
/// doubt), it reads the log's end anew first.
async fn catch_up_then_write(shared: &Shared, log: &Log) {
    let behind = std::mem::take(&mut shared.state().behind);
    if behind {
        shared.writer.store(false, Ordering::Release);
        // Briefly: this task renews the lease too, and the log may be electing a leader.
        match tokio::time::timeout(TICK * 10, shared.stream.get_info()).await {
            Err(_) => {
                shared.state().behind = true;
                return;
            }
            Ok(Ok(info)) => {
                let end = info.state.last_sequence;
                let applied = log.applied();
                if end < applied {
                    shared.stop(super::continuity::ahead(applied, end));
                    return;
                }
                shared.log_last.fetch_max(end, Ordering::AcqRel);
                shared.state().catching_up = Some(end);
            }
            Ok(Err(e)) => {
                tracing::warn!("cannot read the log's end: {e}");
                shared.state().behind = true;
                return;
            }
        }
    }
    let mut state = shared.state();
    if let Some(end) = state.catching_up
        && log.applied() >= end
        && state.stopped.is_none()
    {
        state.catching_up = None;
        shared.writer.store(true, Ordering::Release);
        tracing::info!("writing the log from position {}", log.applied() + 1);
    }
}

/// If this host writes (or holds the lease), steps down: it stops writing, its lease task
/// hands the lease back, and it does not stand for it again for [`REST`]. Returns whether it
/// did.
pub(super) async fn step_down_if_writer(shared: &Shared) -> bool {
    if !shared.writer.load(Ordering::Acquire) && holder_revision(shared).await.is_none() {
        return false;
    }
    shared.state().resting_until = Some(Instant::now() + REST);
    shared.writer.store(false, Ordering::Release);
    tracing::info!("stepping down as the writer, as asked");
    // The lease task hands the lease back at its next tick.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && holder_revision(shared).await.is_some() {
        tokio::time::sleep(TICK).await;
    }
    true
}

/// Hands the lease back if this host holds it, so that another takes over at once.
pub(super) async fn release(shared: &Shared) {
    if let Some(revision) = holder_revision(shared).await {
        let _ = shared
            .lease
            .delete_expect_revision(WRITER_KEY, Some(revision))
            .await;
    }
}

/// The lease's revision, if this host holds it.
async fn holder_revision(shared: &Shared) -> Option<u64> {
    match shared.lease.entry(WRITER_KEY).await {
        Ok(Some(e)) if e.operation == Operation::Put && e.value.as_ref() == shared.host.as_bytes() => {
            Some(e.revision)
        }
        _ => None,
    }
}
