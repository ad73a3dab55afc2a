//! Where `carshare serve` takes its [`Config`] from, under one rule, checked once: the command
//! line wins over a `CARSHARE_*` variable, which wins over the config file, which wins over the
//! built-in default. Every number is checked against its range wherever it came from, and an
//! error names where the bad value came from: the flag, the variable, or the file and its key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use carshare_host::{ClusterConfig, Config, Limits};
use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::Deserialize;

use crate::cli::{Allocator, LogFormat, ServeArgs};

/// Why the settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The config file cannot be read.
    #[error("cannot read the config file {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    /// The config file is not valid JSON of the expected shape.
    #[error("config file {path}{}: {reason}", key_part(.key))]
    File {
        path: PathBuf,
        key: String,
        reason: String,
    },
    /// A value is out of range or malformed.
    #[error("{origin}: {reason}")]
    Value { origin: String, reason: String },
}

fn key_part(key: &str) -> String {
    if key.is_empty() || key == "." {
        String::new()
    } else {
        format!(", key {key}")
    }
}

/// The config file's shape: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    admin_token: Option<String>,
    #[serde(default)]
    contexts: BTreeMap<String, PathBuf>,
    watch: Option<PathBuf>,
    #[serde(default)]
    cluster: Vec<String>,
    cluster_host: Option<String>,
    cluster_replicas: Option<u64>,
    cluster_user: Option<String>,
    cluster_password: Option<String>,
    instance_allocator: Option<Allocator>,
    log_format: Option<LogFormat>,
    db_cache_mb: Option<u64>,
    partitions: Option<u64>,
    call_deadline_ms: Option<u64>,
    memory_limit_mb: Option<u64>,
    max_instances: Option<u64>,
    max_body_bytes: Option<u64>,
    max_connections: Option<u64>,
    max_connections_per_client: Option<u64>,
    event_attempts: Option<u64>,
    event_backoff_ms: Option<u64>,
    breaker_window: Option<u64>,
    breaker_min_calls: Option<u64>,
    breaker_failure_rate: Option<u64>,
    breaker_open_ms: Option<u64>,
    breaker_probes: Option<u64>,
    breaker_max_concurrent: Option<u64>,
    breaker_exhausted_calls: Option<u64>,
    #[serde(default)]
    context_limits: BTreeMap<String, FileLimits>,
}

/// Per-context limits in the config file; what is left out keeps the global value.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileLimits {
    call_deadline_ms: Option<u64>,
    memory_limit_mb: Option<u64>,
    max_instances: Option<u64>,
}

/// A numeric option: its clap id, its config-file key, and the values it may take.
struct Numeric {
    id: &'static str,
    key: &'static str,
    min: u64,
    max: u64,
}

const fn numeric(id: &'static str, key: &'static str, min: u64, max: u64) -> Numeric {
    Numeric { id, key, min, max }
}

const DB_CACHE_MB: Numeric = numeric("db_cache_mb", "dbCacheMb", 1, 65_536);
const PARTITIONS: Numeric = numeric(
    "partitions",
    "partitions",
    1,
    carshare_core::MAX_PARTITIONS as u64,
);
const CALL_DEADLINE_MS: Numeric = numeric("call_deadline_ms", "callDeadlineMs", 1, 3_600_000);
// The instance pool reserves 1 GiB of address space per memory and 1000 instances in all.
const MEMORY_LIMIT_MB: Numeric = numeric("memory_limit_mb", "memoryLimitMb", 1, 1024);
const MAX_INSTANCES: Numeric = numeric("max_instances", "maxInstances", 1, 1000);
const MAX_BODY_BYTES: Numeric = numeric("max_body_bytes", "maxBodyBytes", 1, 64 << 20);
const MAX_CONNECTIONS: Numeric = numeric("max_connections", "maxConnections", 1, 1_000_000);
const MAX_PER_CLIENT: Numeric = numeric(
    "max_connections_per_client",
    "maxConnectionsPerClient",
    1,
    1_000_000,
);
const EVENT_ATTEMPTS: Numeric = numeric("event_attempts", "eventAttempts", 1, 1000);
const EVENT_BACKOFF_MS: Numeric = numeric("event_backoff_ms", "eventBackoffMs", 1, 3_600_000);
const BREAKER_WINDOW: Numeric = numeric("breaker_window", "breakerWindow", 1, 100_000);
const BREAKER_MIN_CALLS: Numeric = numeric("breaker_min_calls", "breakerMinCalls", 1, 100_000);
const BREAKER_FAILURE_RATE: Numeric = numeric("breaker_failure_rate", "breakerFailureRate", 1, 100);
const BREAKER_OPEN_MS: Numeric = numeric("breaker_open_ms", "breakerOpenMs", 1, 86_400_000);
const BREAKER_PROBES: Numeric = numeric("breaker_probes", "breakerProbes", 1, 10_000);
const BREAKER_MAX_CONCURRENT: Numeric = numeric("breaker_max_concurrent", "breakerMaxConcurrent", 1, 100_000);
const CLUSTER_REPLICAS: Numeric = numeric("cluster_replicas", "clusterReplicas", 1, 5);
const BREAKER_EXHAUSTED_CALLS: Numeric =
    numeric("breaker_exhausted_calls", "breakerExhaustedCalls", 1, 100_000);

/// Picks each value by the precedence rule and checks it.
struct Sources<'a> {
    matches: &'a ArgMatches,
    file: Option<&'a Path>,
}

impl Sources<'_> {
    /// The value of `spec`: `given` (from the command line or the environment, as clap found
    /// it) over `from_file`; checked against the spec's range.
    fn number(
        &self,
        spec: &Numeric,
        given: Option<u64>,
        from_file: Option<u64>,
    ) -> Result<Option<u64>, SettingsError> {
        let (value, source) = match (given, from_file) {
            (Some(v), _) => (v, self.describe(spec.id, v)),
            (None, Some(v)) => (v, self.file_key(spec.key)),
            (None, None) => return Ok(None),
        };
        self.in_range(spec, value, source).map(Some)
    }

    fn in_range(&self, spec: &Numeric, value: u64, source: String) -> Result<u64, SettingsError> {
        if (spec.min..=spec.max).contains(&value) {
            Ok(value)
        } else {
            Err(SettingsError::Value {
                origin: source,
                reason: format!("must be from {} to {}, not {value}", spec.min, spec.max),
            })
        }
    }

    /// `--flag VALUE` or `CARSHARE_VAR=VALUE`, as the user wrote it.
    fn describe(&self, id: &str, value: u64) -> String {
        let flag = format!("--{}", id.replace('_', "-"));
        match self.matches.value_source(id) {
            Some(ValueSource::EnvVariable) => format!("CARSHARE_{}={value}", id.to_ascii_uppercase()),
            _ => format!("{flag} {value}"),
        }
    }

    fn file_key(&self, key: &str) -> String {
        let path = self.file.map(|p| p.display().to_string()).unwrap_or_default();
        format!("config file {path}, key {key}")
    }
}

/// Everything `carshare serve` was told: the server's configuration, and how to log.
pub struct Settings {
    /// The server's configuration.
    pub config: Config,
    /// How log lines are written.
    pub log_format: LogFormat,
}

/// The settings from the parsed command line (`args`, with clap's `matches` to tell flags from
/// variables) and the config file it names.
pub fn settings(args: &ServeArgs, matches: &ArgMatches) -> Result<Settings, SettingsError> {
    let file = match &args.config {
        Some(path) => read_file(path)?,
        None => FileConfig::default(),
    };
    let log_format = args.log_format.or(file.log_format).unwrap_or(LogFormat::Text);
    Ok(Settings {
        config: config_from(args, matches, file)?,
        log_format,
    })
}

/// The server's configuration alone (see [`settings`]).
#[cfg(test)]
pub fn config(args: &ServeArgs, matches: &ArgMatches) -> Result<Config, SettingsError> {
    settings(args, matches).map(|s| s.config)
}

fn config_from(args: &ServeArgs, matches: &ArgMatches, file: FileConfig) -> Result<Config, SettingsError> {
    let src = Sources {
        matches,
        file: args.config.as_deref(),
    };
    let mut c = Config::default();
    if let Some(listen) = args.listen {
        c.listen = listen;
    } else if let Some(listen) = &file.listen {
        c.listen = listen.parse().map_err(|_| SettingsError::Value {
            origin: src.file_key("listen"),
            reason: format!("needs an address like 127.0.0.1:8080, not {listen:?}"),
        })?;
    }
    if let Some(dir) = args.data_dir.clone().or(file.data_dir) {
        c.data_dir = dir;
    }
    c.cache_dir = args.cache_dir.clone().or(file.cache_dir);
    c.watch = args.watch.clone().or(file.watch);
    let servers = if args.cluster.is_empty() {
        file.cluster
    } else {
        args.cluster.clone()
    };
    let replicas = src.number(&CLUSTER_REPLICAS, args.cluster_replicas, file.cluster_replicas)?;
    let host = args.cluster_host.clone().or(file.cluster_host);
    if servers.is_empty() && (replicas.is_some() || host.is_some()) {
        return Err(SettingsError::Value {
            origin: if host.is_some() {
                "the cluster host"
            } else {
                "the cluster replicas"
            }
            .into(),
            reason: "are only for a cluster: give --cluster URLS too".into(),
        });
    }
    // Like the admin token, the password never comes from the command line.
    let user = args.cluster_user.clone().or(file.cluster_user);
    let password = std::env::var("CARSHARE_CLUSTER_PASSWORD")
        .ok()
        .or(file.cluster_password);
    let credentials = match (user, password) {
        (Some(user), Some(password)) => Some((user, password)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(SettingsError::Value {
                origin: "the cluster user".into(),
                reason:
                    "needs a password: set CARSHARE_CLUSTER_PASSWORD (or clusterPassword in the config file)"
                        .into(),
            });
        }
        (None, Some(_)) => {
            return Err(SettingsError::Value {
                origin: "the cluster password".into(),
                reason: "needs a user: give --cluster-user (or CARSHARE_CLUSTER_USER, or clusterUser)".into(),
            });
        }
    };
    if servers.is_empty() && credentials.is_some() {
        return Err(SettingsError::Value {
            origin: "the cluster user and password".into(),
            reason: "are only for a cluster: give --cluster URLS too".into(),
        });
    }
    if !servers.is_empty() {
        c.cluster = Some(ClusterConfig {
            servers: servers.iter().map(|s| s.trim().to_string()).collect(),
            host,
            replicas: replicas.unwrap_or(3) as usize,
            credentials,
        });
    }
    if let Some(a) = args.instance_allocator.or(file.instance_allocator) {
        c.instance_allocator = a.into();
    }
    // The token only ever comes from the environment or the file: on a command line, every
    // user of the machine could read it.
    c.admin_token = std::env::var("CARSHARE_ADMIN_TOKEN")
        .ok()
        .or(file.admin_token)
        .filter(|t| !t.trim().is_empty());
    c.contexts = file.contexts;
    for spec in &args.contexts {
        let (name, path) = spec.split_once('=').ok_or_else(|| SettingsError::Value {
            origin: format!("--context {spec}"),
            reason: "needs NAME=FILE".into(),
        })?;
        c.contexts.insert(name.to_string(), PathBuf::from(path));
    }

    let ms = |v: u64| Duration::from_millis(v);
    if let Some(v) = src.number(&DB_CACHE_MB, args.db_cache_mb, file.db_cache_mb)? {
        c.db_cache_bytes = (v as usize) << 20;
    }
    if let Some(v) = src.number(&PARTITIONS, args.partitions, file.partitions)? {
        if v > 1 && c.cluster.is_some() {
            return Err(SettingsError::Value {
                origin: "--partitions".into(),
                reason: "more than one partition is not yet served in a cluster".into(),
            });
        }
        c.partitions = v as u32;
    }
    if let Some(v) = src.number(&CALL_DEADLINE_MS, args.call_deadline_ms, file.call_deadline_ms)? {
        c.limits.call_deadline = ms(v);
    }
    if let Some(v) = src.number(&MEMORY_LIMIT_MB, args.memory_limit_mb, file.memory_limit_mb)? {
        c.limits.memory_bytes = (v as usize) << 20;
    }
    if let Some(v) = src.number(&MAX_INSTANCES, args.max_instances, file.max_instances)? {
        c.limits.max_instances = v as usize;
    }
    if let Some(v) = src.number(&MAX_BODY_BYTES, args.max_body_bytes, file.max_body_bytes)? {
        c.max_body = v as usize;
    }
    if let Some(v) = src.number(&MAX_CONNECTIONS, args.max_connections, file.max_connections)? {
        c.max_connections = v as usize;
    }
    if let Some(v) = src.number(
        &MAX_PER_CLIENT,
        args.max_connections_per_client,
        file.max_connections_per_client,
    )? {
        c.max_connections_per_client = v as usize;
    }
    if let Some(v) = src.number(&EVENT_ATTEMPTS, args.event_attempts, file.event_attempts)? {
        c.retry.max_attempts = v as u32;
    }
    if let Some(v) = src.number(&EVENT_BACKOFF_MS, args.event_backoff_ms, file.event_backoff_ms)? {
        c.retry.first_backoff = ms(v);
    }
    if let Some(v) = src.number(&BREAKER_WINDOW, args.breaker_window, file.breaker_window)? {
        c.breaker.window = v as usize;
    }
    if let Some(v) = src.number(&BREAKER_MIN_CALLS, args.breaker_min_calls, file.breaker_min_calls)? {
        c.breaker.minimum_calls = v as usize;
    }
    if let Some(v) = src.number(
        &BREAKER_FAILURE_RATE,
        args.breaker_failure_rate,
        file.breaker_failure_rate,
    )? {
        c.breaker.failure_rate = v as f64 / 100.0;
    }
    if let Some(v) = src.number(&BREAKER_OPEN_MS, args.breaker_open_ms, file.breaker_open_ms)? {
        c.breaker.open_for = ms(v);
    }
    if let Some(v) = src.number(&BREAKER_PROBES, args.breaker_probes, file.breaker_probes)? {
        c.breaker.half_open_probes = v as usize;
    }
    if let Some(v) = src.number(
        &BREAKER_MAX_CONCURRENT,
        args.breaker_max_concurrent,
        file.breaker_max_concurrent,
    )? {
        c.breaker.max_concurrent = v as usize;
    }
    if let Some(v) = src.number(
        &BREAKER_EXHAUSTED_CALLS,
        args.breaker_exhausted_calls,
        file.breaker_exhausted_calls,
    )? {
        c.breaker.exhausted_to_open = v as usize;
    }
    for (name, l) in file.context_limits {
        c.context_limits
            .insert(name.clone(), context_limits(&src, &name, &c.limits, l)?);
    }
    Ok(c)
}

/// `contextLimits.<name>` of the file over the global limits.
fn context_limits(
    src: &Sources<'_>,
    name: &str,
    global: &Limits,
    l: FileLimits,
) -> Result<Limits, SettingsError> {
    let mut limits = global.clone();
    let key = |spec: &Numeric| src.file_key(&format!("contextLimits.{name}.{}", spec.key));
    if let Some(v) = l.call_deadline_ms {
        limits.call_deadline =
            Duration::from_millis(src.in_range(&CALL_DEADLINE_MS, v, key(&CALL_DEADLINE_MS))?);
    }
    if let Some(v) = l.memory_limit_mb {
        limits.memory_bytes = (src.in_range(&MEMORY_LIMIT_MB, v, key(&MEMORY_LIMIT_MB))? as usize) << 20;
    }
    if let Some(v) = l.max_instances {
        limits.max_instances = src.in_range(&MAX_INSTANCES, v, key(&MAX_INSTANCES))? as usize;
    }
    Ok(limits)
}

fn read_file(path: &Path) -> Result<FileConfig, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|error| SettingsError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let de = &mut serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de).map_err(|e| SettingsError::File {
        path: path.to_path_buf(),
        key: e.path().to_string(),
        reason: e.into_inner().to_string(),
    })
}

#[cfg(test)]
mod tests;
