//! What an operator does to the cluster and the data as a whole: see every host present, move
//! the writer's lease, and take a backup of this host's data while it serves.

use std::path::Path;

use carshare_core::{Backup, StorageError};
use serde::Serialize;

use super::Runtime;
use crate::cluster::{ClusterStatus, Presence, StepDownError, SteppedDown};

/// What `GET /admin/cluster` shows.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterOverview {
    /// This host's part.
    pub this_host: ClusterStatus,
    /// Every host present (one process each), as its presence says.
    pub hosts: Vec<Presence>,
}

/// Why a backup was not taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The destination is not usable: relative, existing, or in a missing directory.
    #[error("{0}")]
    Destination(String),
    /// The copy failed (nothing is left at the destination).
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl Runtime {
    /// This host's part in its cluster and every host present, if it serves in a cluster.
    pub async fn cluster_overview(&self) -> Option<Result<ClusterOverview, String>> {
        let cluster = self.inner.cluster.get()?;
        let this_host = cluster.status(&self.inner.log);
        Some(
            cluster
                .hosts()
                .await
                .map(|hosts| ClusterOverview { this_host, hosts }),
        )
    }

    /// Has the cluster's writer step down (from any host); `None` outside a cluster.
    pub async fn step_down(&self) -> Option<Result<SteppedDown, StepDownError>> {
        Some(self.inner.cluster.get()?.step_down().await)
    }

    /// Writes a consistent copy of this host's data, as committed now, to `dest` (an absolute
    /// path on this host's machine that does not exist yet), while the system goes on
    /// serving: a file, or with several partitions a directory of one file per partition, all
    /// read at one point. Returns what each partition's copy holds.
    pub async fn backup(&self, dest: &Path) -> Result<Vec<Backup>, BackupError> {
        if !dest.is_absolute() {
            return Err(BackupError::Destination(format!(
                "{} is not an absolute path",
                dest.display()
            )));
        }
        if dest.exists() {
            return Err(BackupError::Destination(format!(
                "{} exists already",
                dest.display()
            )));
        }
        if !dest.parent().is_some_and(Path::is_dir) {
            return Err(BackupError::Destination(format!(
                "the directory of {} does not exist",
                dest.display()
            )));
        }
        let (partitions, dest) = (self.inner.partitions.clone(), dest.to_path_buf());
        let started = std::time::Instant::now();
        let backup = tokio::task::spawn_blocking(move || partitions.backup(&dest))
            .await
            .map_err(StorageError::new)??;
        tracing::info!(
            "took a backup: {} bytes, events up to {:?}, in {:?}",
            backup.iter().map(|b| b.bytes).sum::<u64>(),
            backup.iter().map(|b| b.last_seq).collect::<Vec<_>>(),
            started.elapsed()
        );
        Ok(backup)
    }
}
