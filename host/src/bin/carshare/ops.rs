//! The operator's commands that act on data and on the cluster as a whole: `carshare backup`,
//! `carshare restore`, `carshare cluster status|step-down|refound`.

use std::path::{Path, PathBuf};

use carshare_core::{Log, Partitions};
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
            let n = partition_files(dir).len().max(1) as u32;
            let partitions = Partitions::open(dir, n, |_| Log::builder()).map_err(|e| {
                format!(
                    "cannot open {}: {e} (a running server's data is backed up with --url)",
                    dir.display()
                )
            })?;
            let backup = partitions.backup(&args.dest);
            partitions.close();
            let backup = backup.map_err(|e| format!("the backup failed: {e}"))?;
            Ok(serde_json::json!({
                "path": args.dest, "bytes": backup.iter().map(|b| b.bytes).sum::<u64>(),
                "lastSeq": backup[0].last_seq, "logPosition": backup[0].position.applied,
                "partitions": backup.iter().enumerate()
                    .map(|(p, b)| serde_json::json!({ "partition": p, "bytes": b.bytes, "lastSeq": b.last_seq }))
                    .collect::<Vec<_>>(),
            })
            .to_string())
        }
        (None, None) => Err("give --url of a running server, or --data-dir of a stopped one".into()),
    }
}

/// The partition files of a data directory (or of a backup of several partitions), in order:
/// `carshare.redb`, `carshare.p1.redb`, ... as far as they go without a gap.
fn partition_files(dir: &Path) -> Vec<PathBuf> {
    (0..carshare_core::MAX_PARTITIONS)
        .map(|p| carshare_core::partition_file(dir, p))
        .take_while(|f| f.exists())
        .collect()
}

/// `carshare restore`: checks the backup (a file, or a directory of one file per partition),
/// keeps what the data directory held beside it, and puts the backup in place whole (each file
/// written under a temporary name, synced, renamed).
pub fn restore(args: &RestoreArgs) -> Result<String, String> {
    let sources: Vec<PathBuf> = if args.src.is_dir() {
        partition_files(&args.src)
    } else {
        vec![args.src.clone()]
    };
    if sources.is_empty() {
        return Err(format!(
            "{} holds no partition's backup (carshare.redb)",
            args.src.display()
        ));
    }
    let mut last_seqs = Vec::new();
    for src in &sources {
        let backup =
            Log::inspect(src).map_err(|e| format!("{} is not a usable backup: {e}", src.display()))?;
        last_seqs.push(backup.last_seq);
    }
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| format!("cannot create {}: {e}", args.data_dir.display()))?;
    let existing = partition_files(&args.data_dir);
    let mut kept = Vec::new();
    if !existing.is_empty() {
        if !args.force {
            return Err(format!(
                "{} holds a database already: give --force to replace it (it is kept beside, renamed)",
                args.data_dir.display()
            ));
        }
        // A server holding the database open would go on writing to the files kept aside.
        let held =
            Partitions::open(&args.data_dir, existing.len() as u32, |_| Log::builder()).map_err(|e| {
                format!(
                    "cannot replace the database in {} (is its server still running?): {e}",
                    args.data_dir.display()
                )
            })?;
        held.close();
        drop(held);
        let stamp = carshare_core::now_millis();
        for db in existing {
            let aside = db.with_extension(format!("redb.replaced-{stamp}"));
            std::fs::rename(&db, &aside).map_err(|e| format!("cannot move {} aside: {e}", db.display()))?;
            kept.push(aside);
        }
    }
    for (p, src) in sources.iter().enumerate() {
        let db = carshare_core::partition_file(&args.data_dir, p as u32);
        let partial = db.with_extension("redb.restoring");
        std::fs::copy(src, &partial).map_err(|e| format!("cannot copy the backup: {e}"))?;
        std::fs::File::open(&partial)
            .and_then(|f| f.sync_all())
            .map_err(|e| format!("cannot sync the copy: {e}"))?;
        std::fs::rename(&partial, &db).map_err(|e| format!("cannot put the backup in place: {e}"))?;
    }
    Ok(serde_json::json!({
        "restored": args.data_dir, "lastSeq": last_seqs[0],
        "partitions": last_seqs.iter().enumerate()
            .map(|(p, s)| serde_json::json!({ "partition": p, "lastSeq": s }))
            .collect::<Vec<_>>(),
        "kept": kept.first(), "keptAll": kept,
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
