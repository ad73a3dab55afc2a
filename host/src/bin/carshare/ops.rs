//! The operator's commands that act on data and on the cluster as a whole: `carshare backup`,
//! `carshare restore`, `carshare cluster status|step-down|refound`.

use std::path::{Path, PathBuf};

use carshare_core::Log;
use carshare_host::ClusterConfig;

use crate::cli::{BackupArgs, ClusterCommand, RefoundArgs, RestoreArgs};
use crate::client::Admin;

/// `carshare backup`: through a running server's admin API, or of a stopped server's data.
pub async fn backup(args: &BackupArgs, token: Option<String>) -> Result<String, String> {
    match (&args.url, &args.data_dir) {
        (Some(url), _) => {
            let dest = absolute(&args.dest)?;
            let body = serde_json::json!({ "path": dest }).to_string().into_bytes();
            let answer = Admin::new(url, token)?
                .json("POST", "/admin/backup", body)
                .await?;
            Ok(serde_json::to_string_pretty(&answer).unwrap_or_default())
        }
        (None, Some(dir)) => {
            let log = Log::open(dir.join("carshare.redb")).map_err(|e| {
                format!(
                    "cannot open {}: {e} (a running server's data is backed up with --url)",
                    dir.display()
                )
            })?;
            let backup = log
                .backup(&args.dest)
                .map_err(|e| format!("the backup failed: {e}"))?;
            log.close();
            Ok(serde_json::json!({
                "path": args.dest, "bytes": backup.bytes, "lastSeq": backup.last_seq,
                "logPosition": backup.position.applied,
            })
            .to_string())
        }
        (None, None) => Err("give --url of a running server, or --data-dir of a stopped one".into()),
    }
}

/// `carshare restore`: checks the backup, keeps what the data directory held beside it, and
/// puts the backup in place whole (written under a temporary name, synced, renamed).
pub fn restore(args: &RestoreArgs) -> Result<String, String> {
    let backup =
        Log::inspect(&args.src).map_err(|e| format!("{} is not a usable backup: {e}", args.src.display()))?;
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| format!("cannot create {}: {e}", args.data_dir.display()))?;
    let db = args.data_dir.join("carshare.redb");
    let mut kept = None;
    if db.exists() {
        if !args.force {
            return Err(format!(
                "{} holds a database already: give --force to replace it (it is kept beside, renamed)",
                args.data_dir.display()
            ));
        }
        // A server holding the database open would go on writing to the file kept aside.
        drop(Log::open(&db).map_err(|e| {
            format!(
                "cannot replace {} (is its server still running?): {e}",
                db.display()
            )
        })?);
        let aside = args
            .data_dir
            .join(format!("carshare.redb.replaced-{}", carshare_core::now_millis()));
        std::fs::rename(&db, &aside).map_err(|e| format!("cannot move {} aside: {e}", db.display()))?;
        kept = Some(aside);
    }
    let partial = args.data_dir.join("carshare.redb.restoring");
    std::fs::copy(&args.src, &partial).map_err(|e| format!("cannot copy the backup: {e}"))?;
    std::fs::File::open(&partial)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("cannot sync the copy: {e}"))?;
    std::fs::rename(&partial, &db).map_err(|e| format!("cannot put the backup in place: {e}"))?;
    Ok(serde_json::json!({
        "restored": db, "lastSeq": backup.last_seq, "logPosition": backup.position.applied,
        "kept": kept,
        "next": "start the server on this data directory; in a cluster it applies the log from the backup's position on",
    })
    .to_string())
}

/// `carshare cluster ...`.
pub async fn cluster(cmd: &ClusterCommand, token: Option<String>) -> Result<String, String> {
    let answer = match cmd {
        ClusterCommand::Status(server) => {
            Admin::new(&server.url, token)?
                .json("GET", "/admin/cluster", Vec::new())
                .await?
        }
        ClusterCommand::StepDown(server) => {
            Admin::new(&server.url, token)?
                .json("POST", "/admin/cluster/step-down", Vec::new())
                .await?
        }
        ClusterCommand::Refound(args) => return refound(args).await,
    };
    Ok(serde_json::to_string_pretty(&answer).unwrap_or_default())
}

async fn refound(args: &RefoundArgs) -> Result<String, String> {
    let password = std::env::var("CARSHARE_CLUSTER_PASSWORD").ok();
    let credentials = match (&args.cluster_user, password) {
        (Some(user), Some(password)) => Some((user.clone(), password)),
        (None, None) => None,
        _ => return Err("the cluster user and CARSHARE_CLUSTER_PASSWORD go together".into()),
    };
    let config = ClusterConfig {
        servers: args.cluster.clone(),
        host: None,
        replicas: args.cluster_replicas,
        credentials,
    };
    let done = carshare_host::refound(&config, &args.data_dir)
        .await
        .map_err(|e| e.to_string())?;
    Ok(serde_json::json!({
        "logId": format!("{:016x}", done.log_id),
        "position": done.position,
        "previousEnd": done.previous_end,
        "componentsStored": done.components,
        "componentsMissing": done.missing_components,
        "next": "start this host; hosts whose data stops at the same point continue, the others \
                 must start on an empty data directory to join from a snapshot",
    })
    .to_string())
}

fn absolute(path: &Path) -> Result<PathBuf, String> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    let here = std::env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))?;
    Ok(here.join(path))
}
