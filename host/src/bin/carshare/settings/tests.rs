//! The precedence rule, the range checks and the error messages, on real parses.

use clap::{CommandFactory, FromArgMatches};

use super::*;
use crate::cli::{Cli, Command};

/// Parses `line` as `carshare serve ...` would be.
fn parse(line: &str) -> Result<Config, String> {
    let matches = Cli::command()
        .try_get_matches_from(std::iter::once("carshare").chain(line.split_whitespace()))
        .map_err(|e| e.to_string())?;
    let cli = Cli::from_arg_matches(&matches).map_err(|e| e.to_string())?;
    let Command::Serve(args) = cli.command else {
        panic!("not serve")
    };
    let sub = matches.subcommand_matches("serve").unwrap();
    config(&args, sub).map_err(|e| e.to_string())
}

#[test]
fn serve_flags() {
    let c =
        parse("serve --listen 127.0.0.1:0 --data-dir /tmp/x --context payment=p.wasm --call-deadline-ms=50")
            .unwrap();
    assert_eq!(c.listen.port(), 0);
    assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    assert_eq!(c.contexts["payment"], PathBuf::from("p.wasm"));
    assert_eq!(c.limits.call_deadline, Duration::from_millis(50));
}

#[test]
fn the_command_line_wins_over_the_file_and_the_file_over_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.json");
    std::fs::write(
        &file,
        r#"{"callDeadlineMs": 300, "maxInstances": 7, "contextLimits": {"order": {"maxInstances": 3}}}"#,
    )
    .unwrap();
    let c = parse(&format!("serve --config {} --max-instances 9", file.display())).unwrap();
    assert_eq!(
        c.limits.call_deadline,
        Duration::from_millis(300),
        "from the file"
    );
    assert_eq!(c.limits.max_instances, 9, "the flag wins");
    assert_eq!(c.context_limits["order"].max_instances, 3);
    assert_eq!(
        c.context_limits["order"].call_deadline,
        Duration::from_millis(300)
    );
    assert_eq!(c.max_connections_per_client, 1024, "the default");
}

#[test]
fn a_bad_config_file_names_the_file_the_key_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.json");
    let cases = [
        (r#"{"bogus": 1}"#, "unknown field `bogus`"),
        (r#"{"maxInstances": "many"}"#, "key maxInstances: invalid type"),
        (r#"{"maxInstances": -1}"#, "key maxInstances: invalid value"),
        (
            r#"{"maxInstances": 0}"#,
            "key maxInstances: must be from 1 to 1000, not 0",
        ),
        (
            r#"{"contextLimits": {"order": {"memoryLimitMb": 5000}}}"#,
            "key contextLimits.order.memoryLimitMb: must be from 1 to 1024",
        ),
        (r#"{"listen": "nowhere"}"#, "key listen: needs an address"),
        ("{not json", "line 1 column 2"),
    ];
    for (text, expected) in cases {
        std::fs::write(&file, text).unwrap();
        let e = parse(&format!("serve --config {}", file.display())).unwrap_err();
        assert!(e.contains(&file.display().to_string()), "{text}: {e}");
        assert!(e.contains(expected), "{text}: {e}");
    }
}

#[test]
fn numbers_are_checked_never_truncated() {
    for line in [
        "serve --event-attempts 4294967297",
        "serve --max-instances 0",
        "serve --breaker-failure-rate 101",
        "serve --memory-limit-mb 100000",
    ] {
        let e = parse(line).unwrap_err();
        assert!(e.contains("must be from"), "{line}: {e}");
    }
    let e = parse("serve --event-attempts 4294967297").unwrap_err();
    assert_eq!(
        e,
        "--event-attempts 4294967297: must be from 1 to 1000, not 4294967297"
    );
}

#[test]
fn bad_arguments_are_errors() {
    for line in [
        "serve --listen nowhere",
        "serve --bogus 1",
        "serve --listen",
        "frobnicate",
        "serve --context x",
        "serve --max-instances -3",
    ] {
        assert!(parse(line).is_err(), "{line}");
    }
}
