//! The server's configuration: defaults, then a JSON config file (`--config`), then the
//! command line, then `CARSHARE_ADMIN_TOKEN`, each overriding the one before.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use carshare_core::{BreakerConfig, RetryPolicy};

use crate::wasm::Limits;

/// Everything `carshare serve` needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where the database lives.
    pub data_dir: PathBuf,
    /// Where compiled components are cached; `None` means [`default_cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// Bearer token of the admin API; `None` disables it.
    pub admin_token: Option<String>,
    /// Contexts loaded from files instead of (or besides) the embedded ones: name → path.
    pub contexts: BTreeMap<String, PathBuf>,
    /// Sandbox limits.
    pub limits: Limits,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections at most from one client address.
    pub max_connections_per_client: usize,
    /// How failing events are retried before they are parked.
    pub retry: RetryPolicy,
    /// The circuit breaker and bulkhead in front of synchronous calls.
    pub breaker: BreakerConfig,
    /// Sandbox limits of particular contexts, instead of `limits`.
    pub context_limits: BTreeMap<String, Limits>,
    /// A directory whose `<context>.wasm` files are swapped in when they change.
    pub watch: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("carshare-data"),
            cache_dir: None,
            admin_token: None,
            contexts: BTreeMap::new(),
            limits: Limits::default(),
            max_body: 1 << 20,
            max_connections: crate::fds::default_max_connections(),
            max_connections_per_client: 1024,
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
            context_limits: BTreeMap::new(),
            watch: None,
        }
    }
}

/// The config file's shape (all fields optional).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    admin_token: Option<String>,
    #[serde(default)]
    contexts: BTreeMap<String, PathBuf>,
    call_deadline_ms: Option<u64>,
    memory_limit_mb: Option<usize>,
    max_instances: Option<usize>,
    max_body_bytes: Option<usize>,
    max_connections: Option<usize>,
    max_connections_per_client: Option<usize>,
    event_attempts: Option<u32>,
    event_backoff_ms: Option<u64>,
    breaker_window: Option<usize>,
    breaker_min_calls: Option<usize>,
    breaker_failure_rate: Option<f64>,
    breaker_open_ms: Option<u64>,
    breaker_probes: Option<usize>,
    breaker_max_concurrent: Option<usize>,
    #[serde(default)]
    context_limits: BTreeMap<String, FileLimits>,
    watch: Option<PathBuf>,
}

/// Per-context limits in the config file; what is left out keeps the global value.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileLimits {
    call_deadline_ms: Option<u64>,
    memory_limit_mb: Option<usize>,
    max_instances: Option<usize>,
}

/// The `serve` usage text.
pub const USAGE: &str = "\
carshare: the car-sharing business as one runtime of WebAssembly bounded contexts

USAGE:
    carshare serve [OPTIONS]
    carshare --help | --version

OPTIONS (serve):
    --listen ADDR            address to serve HTTP on [default: 127.0.0.1:8080]
    --data-dir DIR           where the database lives [default: ./carshare-data]
    --cache-dir DIR          compiled-component cache, shared by every data dir
                             [default: $CARSHARE_CACHE_DIR, else $XDG_CACHE_HOME/carshare,
                             else ~/.cache/carshare, else DATA-DIR/cache]
    --config FILE            JSON config file (camelCase keys: listen, dataDir, cacheDir,
                             adminToken, contexts {name: path}, callDeadlineMs,
                             memoryLimitMb, maxInstances, maxBodyBytes, maxConnections,
                             maxConnectionsPerClient)
    --context NAME=FILE      run context NAME from FILE (a .wasm component) instead of the
                             built-in one; may be repeated
    --call-deadline-ms N     CPU time one call into a context may take [default: 1000]
    --memory-limit-mb N      memory one context instance may use [default: 64]
    --max-instances N        instances of one context alive at once [default: 64]
    --event-attempts N       attempts before a failing event is parked [default: 5]
    --event-backoff-ms N     wait after an event's first failure, doubling [default: 50]
    --breaker-window N       calls the circuit breaker remembers [default: 100]
    --breaker-min-calls N    calls before the failure rate counts [default: 20]
    --breaker-failure-rate P failure rate in percent that opens the breaker [default: 50]
    --breaker-open-ms N      how long an open breaker refuses calls [default: 30000]
    --breaker-probes N       calls let through when half-open [default: 10]
        --breaker-max-concurrent N  synchronous calls in flight per context [default: 25]
    --max-connections N      connections open at once; idle ones are closed early near
                             the limit [default: what the open-file limit allows]
    --max-connections-per-client N
                             connections open at once from one address [default: 1024]
    --watch DIR              swap a context in when DIR/<context>.wasm changes
                             (per-context limits: contextLimits in the config file)

OTHER COMMANDS (talk to a running server; the token comes from CARSHARE_ADMIN_TOKEN):
    carshare contexts list [--url URL]
    carshare contexts swap NAME FILE.wasm [--url URL]
    carshare contexts rollback NAME [--url URL]
                             URL defaults to http://127.0.0.1:8080
    -h, --help               print this help

ENVIRONMENT:
    CARSHARE_ADMIN_TOKEN     bearer token for /admin (without one, /admin answers 403)
    CARSHARE_CACHE_DIR       compiled-component cache (--cache-dir overrides it)
    CARSHARE_LOG             debug | info | warn | error [default: info]
";

/// Where compiled components are cached when nothing says otherwise: the user's cache
/// directory (`$XDG_CACHE_HOME/carshare`, else `~/.cache/carshare`), so that every data dir
/// of this user shares one compilation of each component and a new data dir starts in
/// milliseconds; `<data-dir>/cache` when there is no home to put it in.
pub fn default_cache_dir(data_dir: &std::path::Path) -> PathBuf {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    std::env::var_os("XDG_CACHE_HOME")
        .and_then(absolute)
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(absolute)
                .map(|h| h.join(".cache"))
        })
        .map(|base| base.join("carshare"))
        .unwrap_or_else(|| data_dir.join("cache"))
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Run the server.
    Serve(Box<Config>),
    /// Print help.
    Help,
    /// Print the version.
    Version,
    /// Talk to a running server's admin API.
    Contexts(ContextsCommand),
}

/// `carshare contexts ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextsCommand {
    /// The server, `http://host:port`.
    pub url: String,
    /// What to do.
    pub action: ContextsAction,
}

/// What `carshare contexts` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextsAction {
    /// List the contexts.
    List,
    /// Swap context `name` to the component in `file`.
    Swap {
        /// The context.
        name: String,
        /// The component.
        file: PathBuf,
    },
    /// Roll context `name` back.
    Rollback {
        /// The context.
        name: String,
    },
}

fn parse_contexts(args: &[String]) -> Result<Command, String> {
    let mut url = "http://127.0.0.1:8080".to_string();
    let mut words = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--url" {
            url = it
                .next()
                .ok_or("--url needs a value")?
                .trim_end_matches('/')
                .to_string();
        } else if let Some(v) = a.strip_prefix("--url=") {
            url = v.trim_end_matches('/').to_string();
        } else {
            words.push(a.as_str());
        }
    }
    let action = match words.as_slice() {
        ["list"] => ContextsAction::List,
        ["swap", name, file] => ContextsAction::Swap {
            name: name.to_string(),
            file: PathBuf::from(file),
        },
        ["rollback", name] => ContextsAction::Rollback {
            name: name.to_string(),
        },
        _ => {
            return Err(
                "usage: carshare contexts list | swap NAME FILE.wasm | rollback NAME [--url URL]".into(),
            );
        }
    };
    Ok(Command::Contexts(ContextsCommand { url, action }))
}

/// Parses the arguments after the program name.
pub fn parse_args(args: &[String]) -> Result<Command, String> {
    let mut it = args.iter().peekable();
    match it.next().map(String::as_str) {
        None | Some("-h" | "--help" | "help") => return Ok(Command::Help),
        Some("-V" | "--version") => return Ok(Command::Version),
        Some("serve") => {}
        Some("contexts") => return parse_contexts(&args[1..]),
        Some(other) => return Err(format!("unknown command {other:?}")),
    }
    let mut cli: Vec<(String, String)> = Vec::new();
    let mut config_file = None;
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            return Ok(Command::Help);
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))?,
        };
        if flag == "--config" {
            config_file = Some(PathBuf::from(value));
        } else {
            cli.push((flag, value));
        }
    }
    let mut config = Config::default();
    if let Some(path) = config_file {
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let file: FileConfig =
            serde_json::from_str(&text).map_err(|e| format!("bad config file {}: {e}", path.display()))?;
        apply_file(&mut config, file);
    }
    if let Some(dir) = std::env::var_os("CARSHARE_CACHE_DIR").filter(|d| !d.is_empty()) {
        config.cache_dir = Some(PathBuf::from(dir));
    }
    for (flag, value) in cli {
        apply_flag(&mut config, &flag, &value)?;
    }
    if let Ok(token) = std::env::var("CARSHARE_ADMIN_TOKEN") {
        config.admin_token = Some(token);
    }
    if config.admin_token.as_deref().is_some_and(|t| t.trim().is_empty()) {
        config.admin_token = None;
    }
    Ok(Command::Serve(Box::new(config)))
}

fn apply_file(c: &mut Config, f: FileConfig) {
    if let Some(v) = f.listen {
        c.listen = v;
    }
    if let Some(v) = f.data_dir {
        c.data_dir = v;
    }
    c.cache_dir = f.cache_dir.or(c.cache_dir.take());
    c.admin_token = f.admin_token.or(c.admin_token.take());
    c.contexts.extend(f.contexts);
    if let Some(v) = f.call_deadline_ms {
        c.limits.call_deadline = Duration::from_millis(v.max(1));
    }
    if let Some(v) = f.memory_limit_mb {
        c.limits.memory_bytes = v.max(1) << 20;
    }
    if let Some(v) = f.max_instances {
        c.limits.max_instances = v.max(1);
    }
    if let Some(v) = f.max_body_bytes {
        c.max_body = v;
    }
    if let Some(v) = f.max_connections {
        c.max_connections = v.max(1);
    }
    if let Some(v) = f.max_connections_per_client {
        c.max_connections_per_client = v.max(1);
    }
    if let Some(v) = f.event_attempts {
        c.retry.max_attempts = v.max(1);
    }
    if let Some(v) = f.event_backoff_ms {
        c.retry.first_backoff = Duration::from_millis(v.max(1));
    }
    if let Some(v) = f.breaker_window {
        c.breaker.window = v.max(1);
    }
    if let Some(v) = f.breaker_min_calls {
        c.breaker.minimum_calls = v.max(1);
    }
    if let Some(v) = f.breaker_failure_rate {
        c.breaker.failure_rate = (v / 100.0).clamp(0.01, 1.0);
    }
    if let Some(v) = f.breaker_open_ms {
        c.breaker.open_for = Duration::from_millis(v.max(1));
    }
    if let Some(v) = f.breaker_probes {
        c.breaker.half_open_probes = v.max(1);
    }
    if let Some(v) = f.breaker_max_concurrent {
        c.breaker.max_concurrent = v.max(1);
    }
    for (name, l) in f.context_limits {
        let mut limits = c.limits.clone();
        if let Some(v) = l.call_deadline_ms {
            limits.call_deadline = Duration::from_millis(v.max(1));
        }
        if let Some(v) = l.memory_limit_mb {
            limits.memory_bytes = v.max(1) << 20;
        }
        if let Some(v) = l.max_instances {
            limits.max_instances = v.max(1);
        }
        c.context_limits.insert(name, limits);
    }
    if let Some(v) = f.watch {
        c.watch = Some(v);
    }
}

fn apply_flag(c: &mut Config, flag: &str, value: &str) -> Result<(), String> {
    let number = |v: &str| {
        v.parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{flag} needs a positive integer, not {v:?}"))
    };
    match flag {
        "--listen" => {
            c.listen = value
                .parse()
                .map_err(|_| format!("--listen needs an address like 127.0.0.1:8080, not {value:?}"))?
        }
        "--data-dir" => c.data_dir = PathBuf::from(value),
        "--cache-dir" => c.cache_dir = Some(PathBuf::from(value)),
        "--context" => {
            let (name, path) = value
                .split_once('=')
                .ok_or_else(|| format!("--context needs NAME=FILE, not {value:?}"))?;
            c.contexts.insert(name.to_string(), PathBuf::from(path));
        }
        "--call-deadline-ms" => c.limits.call_deadline = Duration::from_millis(number(value)?),
        "--memory-limit-mb" => c.limits.memory_bytes = (number(value)? as usize) << 20,
        "--max-instances" => c.limits.max_instances = number(value)? as usize,
        "--event-attempts" => c.retry.max_attempts = number(value)? as u32,
        "--event-backoff-ms" => c.retry.first_backoff = Duration::from_millis(number(value)?),
        "--breaker-window" => c.breaker.window = number(value)? as usize,
        "--breaker-min-calls" => c.breaker.minimum_calls = number(value)? as usize,
        "--breaker-failure-rate" => {
            let p = number(value)?;
            if p > 100 {
                return Err(format!("{flag} is a percentage from 1 to 100"));
            }
            c.breaker.failure_rate = p as f64 / 100.0;
        }
        "--breaker-open-ms" => c.breaker.open_for = Duration::from_millis(number(value)?),
        "--breaker-probes" => c.breaker.half_open_probes = number(value)? as usize,
        "--breaker-max-concurrent" => c.breaker.max_concurrent = number(value)? as usize,
        "--max-connections" => c.max_connections = number(value)? as usize,
        "--max-connections-per-client" => c.max_connections_per_client = number(value)? as usize,
        "--watch" => c.watch = Some(PathBuf::from(value)),
        _ => return Err(format!("unknown option {flag:?} (see --help)")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn serve_flags() {
        let Command::Serve(c) = parse_args(&args(
            "serve --listen 127.0.0.1:0 --data-dir /tmp/x --context payment=p.wasm --call-deadline-ms=50",
        ))
        .unwrap() else {
            panic!("not serve")
        };
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.contexts["payment"], PathBuf::from("p.wasm"));
        assert_eq!(c.limits.call_deadline, Duration::from_millis(50));
    }

    #[test]
    fn contexts_commands() {
        let Command::Contexts(c) =
            parse_args(&args("contexts swap order /tmp/o.wasm --url http://h:1/")).unwrap()
        else {
            panic!("not contexts")
        };
        assert_eq!(c.url, "http://h:1");
        assert_eq!(
            c.action,
            ContextsAction::Swap {
                name: "order".into(),
                file: PathBuf::from("/tmp/o.wasm")
            }
        );
        assert!(matches!(
            parse_args(&args("contexts list")),
            Ok(Command::Contexts(_))
        ));
        assert!(parse_args(&args("contexts swap order")).is_err());
    }

    #[test]
    fn per_context_limits_come_from_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.json");
        std::fs::write(
            &file,
            r#"{"callDeadlineMs": 300, "contextLimits": {"order": {"maxInstances": 3}}}"#,
        )
        .unwrap();
        let Command::Serve(c) = parse_args(&args(&format!("serve --config {}", file.display()))).unwrap()
        else {
            panic!("not serve")
        };
        assert_eq!(c.limits.call_deadline, Duration::from_millis(300));
        assert_eq!(c.context_limits["order"].max_instances, 3);
        assert_eq!(
            c.context_limits["order"].call_deadline,
            Duration::from_millis(300)
        );
        std::fs::write(&file, r#"{"bogus": 1}"#).unwrap();
        assert!(parse_args(&args(&format!("serve --config {}", file.display()))).is_err());
    }

    #[test]
    fn bad_arguments_are_errors() {
        for a in [
            "serve --listen nowhere",
            "serve --bogus 1",
            "serve --listen",
            "frobnicate",
            "serve --context x",
            "serve --max-instances 0",
        ] {
            assert!(parse_args(&args(a)).is_err(), "{a}");
        }
        assert!(matches!(parse_args(&args("serve --help")), Ok(Command::Help)));
        assert!(matches!(parse_args(&args("--version")), Ok(Command::Version)));
    }
}
