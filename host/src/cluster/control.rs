//! Operators' requests to the cluster that any host takes: moving the writer's lease
//! (`carshare cluster step-down`, `POST /admin/cluster/step-down`) and listing the hosts
//! present. A step-down made on a host that does not write is sent to the writer over NATS
//! (`carshare.control.<host>`).

use std::sync::Arc;
use std::time::Duration;

use carshare_core::Log;
use futures_util::StreamExt;
use serde::Serialize;

use super::presence::{self, Presence};
use super::{Cluster, Shared, lease};

/// What a step-down did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SteppedDown {
    /// The host that wrote and stepped down.
    pub host: String,
    /// How long it stays out of the running, in seconds.
    pub rests_seconds: u64,
}

/// Why a step-down failed.
#[derive(Debug, thiserror::Error)]
pub enum StepDownError {
    /// No host writes now.
    #[error("no host writes now: there is nothing to step down")]
    NoWriter,
    /// The writer did not answer.
    #[error("the writer {0} did not answer: {1}")]
    Unreachable(String, String),
}

fn control_subject(host: &str) -> String {
    format!("carshare.control.{host}")
}

const STEP_DOWN: &[u8] = b"step-down";

impl Cluster {
    /// Has the host that writes step down: it hands the lease back and stays out of the
    /// running for a while, so another host takes over within about a second.
    pub async fn step_down(&self) -> Result<SteppedDown, StepDownError> {
        let s = &self.shared;
        let rests_seconds = lease::REST.as_secs();
        if lease::step_down_if_writer(s).await {
            return Ok(SteppedDown {
                host: s.host.clone(),
                rests_seconds,
            });
        }
        let writer = s.writer_host().ok_or(StepDownError::NoWriter)?;
        let ask = s.client.request(control_subject(&writer), STEP_DOWN.into());
        match tokio::time::timeout(Duration::from_secs(5), ask).await {
            Ok(Ok(reply)) if reply.payload.as_ref() == b"true" => Ok(SteppedDown {
                host: writer,
                rests_seconds,
            }),
            Ok(Ok(_)) => Err(StepDownError::NoWriter),
            Ok(Err(e)) => Err(StepDownError::Unreachable(writer, e.to_string())),
            Err(_) => Err(StepDownError::Unreachable(writer, "no answer within 5 s".into())),
        }
    }

    /// The hosts present in the cluster now: one process each.
    pub async fn hosts(&self) -> Result<Vec<Presence>, String> {
        presence::all(&self.shared.presence).await
    }
}

/// Answers control requests to this host for as long as it runs.
pub(super) async fn serve(shared: Arc<Shared>, _log: Log) {
    loop {
        let mut requests = match shared.client.subscribe(control_subject(&shared.host)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot take control requests: {e}; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(message) = requests.next().await {
            let Some(reply) = message.reply else { continue };
            let answer = match message.payload.as_ref() {
                STEP_DOWN => lease::step_down_if_writer(&shared).await,
                _ => false,
            };
            if let Err(e) = shared.client.publish(reply, answer.to_string().into()).await {
                tracing::warn!("cannot answer a control request: {e}");
            }
        }
    }
}
