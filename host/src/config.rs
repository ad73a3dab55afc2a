//! The server's configuration: defaults, then a JSON config file (`--config`), then the
//! command line, then `CARSHARE_ADMIN_TOKEN`, each overriding the one before.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::wasm::Limits;

/// Everything `carshare serve` needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where the database lives.
    pub data_dir: PathBuf,
    /// Where compiled components are cached (default: `<data-dir>/cache`).
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
            max_connections: 1024,
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
    --cache-dir DIR          compiled-component cache [default: DATA-DIR/cache]
    --config FILE            JSON config file (camelCase keys: listen, dataDir, cacheDir,
                             adminToken, contexts {name: path}, callDeadlineMs,
                             memoryLimitMb, maxInstances, maxBodyBytes, maxConnections)
    --context NAME=FILE      run context NAME from FILE (a .wasm component) instead of the
                             built-in one; may be repeated
    --call-deadline-ms N     CPU time one call into a context may take [default: 1000]
    --memory-limit-mb N      memory one context instance may use [default: 64]
    --max-instances N        instances of one context alive at once [default: 64]
    -h, --help               print this help

ENVIRONMENT:
    CARSHARE_ADMIN_TOKEN     bearer token for /admin (without one, /admin answers 403)
    CARSHARE_LOG             debug | info | warn | error [default: info]
";

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Run the server.
    Serve(Box<Config>),
    /// Print help.
    Help,
    /// Print the version.
    Version,
}

/// Parses the arguments after the program name.
pub fn parse_args(args: &[String]) -> Result<Command, String> {
    let mut it = args.iter().peekable();
    match it.next().map(String::as_str) {
        None | Some("-h" | "--help" | "help") => return Ok(Command::Help),
        Some("-V" | "--version") => return Ok(Command::Version),
        Some("serve") => {}
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
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let file: FileConfig = serde_json::from_str(&text)
            .map_err(|e| format!("bad config file {}: {e}", path.display()))?;
        apply_file(&mut config, file);
    }
    for (flag, value) in cli {
        apply_flag(&mut config, &flag, &value)?;
    }
    if let Ok(token) = std::env::var("CARSHARE_ADMIN_TOKEN") {
        config.admin_token = Some(token);
    }
    if config
        .admin_token
        .as_deref()
        .is_some_and(|t| t.trim().is_empty())
    {
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
            c.listen = value.parse().map_err(|_| {
                format!("--listen needs an address like 127.0.0.1:8080, not {value:?}")
            })?
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
        let Command::Serve(c) = parse_args(&args("serve --listen 127.0.0.1:0 --data-dir /tmp/x --context payment=p.wasm --call-deadline-ms=50")).unwrap() else {
            panic!("not serve")
        };
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.contexts["payment"], PathBuf::from("p.wasm"));
        assert_eq!(c.limits.call_deadline, Duration::from_millis(50));
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
        assert!(matches!(
            parse_args(&args("serve --help")),
            Ok(Command::Help)
        ));
        assert!(matches!(
            parse_args(&args("--version")),
            Ok(Command::Version)
        ));
    }
}
