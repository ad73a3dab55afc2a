//! The writer's side of the log: appending a commit batch's record, fenced and de-duplicated
//! by JetStream; sending a unit to the writer from any other host; and, on the writer, taking
//! the units other hosts send.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::header::{NATS_EXPECTED_LAST_SEQUENCE, NATS_MESSAGE_ID};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::{HeaderMap, RequestErrorKind};
use bytes::Bytes;
use carshare_core::{AppendError, ForwardError, Log};
use futures_util::StreamExt;

use super::{SUBJECT, Shared, commit_subject};

/// How long the writer keeps resending a record that got no answer (a leader election of the
/// stream takes up to about 9 s) before it calls the outcome unknown.
const APPEND_PATIENCE: Duration = Duration::from_secs(12);

/// How long one attempt to append waits for the stream's answer before sending again.
const ATTEMPT: Duration = Duration::from_secs(1);

/// How long a host waits for the writer's answer to a forwarded unit before it sends the unit
/// again (its id makes that safe: the core commits it at most once).
pub(super) const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

impl Shared {
    /// Appends `record` right after position `after`; returns its position.
    pub(super) async fn append(&self, record: Bytes, after: u64) -> Result<u64, AppendError> {
        // The same id for every resend of this record: JetStream stores it once and answers
        // a resend with the position it got. Another process (even under this host's name,
        // after a restart) has another nonce, and this one after taking the lease again
        // another epoch, so no other record is ever taken for this one.
        let msg_id = format!(
            "{}-{:016x}-{}-{}",
            self.host,
            self.nonce,
            self.epoch.load(Ordering::Acquire),
            after + 1
        );
        let deadline = Instant::now() + APPEND_PATIENCE;
        // Whether an attempt was sent before this one: only then may the log already hold it.
        let mut sent_before = false;
        loop {
            let mut headers = HeaderMap::new();
            headers.insert(NATS_MESSAGE_ID, msg_id.as_str());
            headers.insert(NATS_EXPECTED_LAST_SEQUENCE, after.to_string().as_str());
            let sent = async {
                self.js
                    .publish_with_headers(SUBJECT, headers, record.clone())
                    .await?
                    .await
            };
            // An attempt that gets no answer soon is sent again (the id makes that safe), so
            // that the record lands as soon as the stream has a leader again.
            let attempt = tokio::time::timeout(ATTEMPT, sent).await;
            let resend = std::mem::replace(&mut sent_before, true);
            let Ok(sent) = attempt else {
                if Instant::now() >= deadline {
                    tracing::error!(
                        "appending to the log at {}: no answer for {APPEND_PATIENCE:?}",
                        after + 1
                    );
                    self.fall_behind();
                    return Err(AppendError::Unknown(format!(
                        "the log's servers did not answer for {APPEND_PATIENCE:?}"
                    )));
                }
                continue;
            };
            match sent {
                Ok(ack) if ack.duplicate && (!resend || ack.sequence != after + 1) => {
                    // The log holds a message with this id that is not this record's earlier
                    // attempt: nothing of this one was appended.
                    tracing::error!(
                        "the log already holds message {msg_id} at position {}: not appending",
                        ack.sequence
                    );
                    self.fall_behind();
                    return Err(AppendError::Refused(format!(
                        "the log already holds a message with this record's id ({msg_id}) at \
                         position {}",
                        ack.sequence
                    )));
                }
                Ok(ack) => {
                    self.log_last.fetch_max(ack.sequence, Ordering::AcqRel);
                    return Ok(ack.sequence);
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    tracing::warn!(
                        "fenced: the log has records after position {after} that this host has not applied"
                    );
                    self.fall_behind();
                    return Err(AppendError::Fenced);
                }
                Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    return Err(AppendError::Refused(format!(
                        "the batch's record ({} bytes) is larger than the NATS servers' max_payload",
                        record.len()
                    )));
                }
                Err(e) if Instant::now() >= deadline => {
                    tracing::error!(
                        "appending to the log at {}: no answer for {APPEND_PATIENCE:?}: {e}",
                        after + 1
                    );
                    // If it landed, this host applies it like any other record before it
                    // writes again.
                    self.fall_behind();
                    return Err(AppendError::Unknown(e.to_string()));
                }
                Err(e) => {
                    tracing::debug!("appending to the log at {}: {e}; sending again", after + 1);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Sends a unit to the host that writes, and returns its answer.
    pub(super) async fn forward(&self, unit: Vec<u8>) -> Result<Vec<u8>, ForwardError> {
        let max = self.max_message_bytes();
        if unit.len() > max {
            return Err(ForwardError::TooLarge {
                bytes: unit.len(),
                max,
            });
        }
        let writer = self.writer_host().ok_or(ForwardError::NoWriter)?;
        let asked = self.client.request(commit_subject(&writer), unit.into());
        // Another host taking the lease means this writer died or was deposed: its answer
        // will likely never come, and waiting longer tells the client nothing more.
        let replaced = async {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if self.writer_host().is_some_and(|w| w != writer) {
                    return;
                }
            }
        };
        let answer = tokio::select! {
            answer = tokio::time::timeout(FORWARD_TIMEOUT, asked) => answer,
            () = replaced => {
                return Err(ForwardError::Unknown(format!(
                    "the writer {writer} was replaced before it answered"
                )));
            }
        };
        match answer {
            Ok(Ok(answer)) => Ok(answer.payload.to_vec()),
            // Nobody listens there (the writer is gone): the unit reached no one.
            Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => Err(ForwardError::NoWriter),
            Ok(Err(e)) => Err(ForwardError::Unknown(format!(
                "the writer {writer} did not answer: {e}"
            ))),
            Err(_) => Err(ForwardError::Unknown(format!(
                "the writer {writer} did not answer within {FORWARD_TIMEOUT:?}"
            ))),
        }
    }
}

/// Takes the units other hosts forward to this one, for as long as it runs: the core commits
/// each if this host writes, and says so if it does not.
pub(super) async fn serve_forwarded(shared: Arc<Shared>, log: Log) {
    loop {
        let mut units = match shared.client.subscribe(commit_subject(&shared.host)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot take forwarded units: {e}; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(message) = units.next().await {
            let Some(reply) = message.reply else { continue };
            let (log, client) = (log.clone(), shared.client.clone());
            tokio::spawn(async move {
                let answer = log.commit_forwarded(&message.payload).await;
                if let Err(e) = client.publish(reply, answer.into()).await {
                    tracing::warn!("cannot answer a forwarded unit: {e}");
                }
            });
        }
    }
}
