//! The command line as an operator meets it: help, version, completions, a config file with a
//! mistake, and `carshare events tail` following a running server's log.

use crate::common::{TestServer, temp_dir};

fn carshare(args: &[&str]) -> std::process::Output {
    crate::common::carshare(args, &[])
}

#[test]
fn help_version_and_completions() {
    let help = carshare(&["--help"]);
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for command in [
        "serve",
        "contexts",
        "events",
        "dev",
        "completions",
        "carshare serve --help",
    ] {
        assert!(text.contains(command), "--help names {command}:\n{text}");
    }
    let serve = String::from_utf8_lossy(&carshare(&["serve", "--help"]).stdout).into_owned();
    for option in [
        "--listen",
        "CARSHARE_LISTEN",
        "--log-format",
        "--max-instances",
        "CARSHARE_MAX_INSTANCES",
    ] {
        assert!(serve.contains(option), "serve --help names {option}");
    }
    let version = carshare(&["--version"]);
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("carshare {}", env!("CARGO_PKG_VERSION"))
    );
    let bash = carshare(&["completions", "bash"]);
    assert!(bash.status.success() && String::from_utf8_lossy(&bash.stdout).contains("complete -F"));
}

#[test]
fn a_bad_config_file_is_named_with_its_key_and_the_reason() {
    let dir = temp_dir();
    let file = dir.path().join("carshare.json");
    std::fs::write(&file, r#"{"listen": "127.0.0.1:0", "maxInstances": 0}"#).unwrap();
    let out = carshare(&["serve", "--config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "config file {}, key maxInstances: must be from 1 to 1000, not 0",
            file.display()
        )),
        "{err}"
    );
    let out = carshare(&["serve", "--event-attempts", "4294967297"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--event-attempts 4294967297: must be from 1 to 1000")
    );
}

#[test]
fn events_tail_follows_the_log_filtered_by_correlation_id() {
    let s = TestServer::start(&[]);
    let product = s.register_product("tail", 10);
    let url = format!("http://{}", s.addr);
    let tail = std::thread::spawn(move || {
        carshare(&[
            "events",
            "tail",
            "--url",
            &url,
            "--correlation-id",
            "tail-req-1",
            "--count",
            "4",
        ])
    });
    // The tail starts at the head: the order placed now is what it prints.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let r = s.request(
        "POST",
        "/orders",
        &[
            ("content-type", "application/json"),
            ("x-request-id", "tail-req-1"),
        ],
        format!(r#"{{"productId":{product},"qty":1}}"#).as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let out = tail.join().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut types: Vec<&str> = lines.iter().map(|e| e["eventType"].as_str().unwrap()).collect();
    // Product and delivery each answer on their own: their events come in either order.
    types.sort();
    assert_eq!(types, vec!["Ordered", "Paid", "ProductChanged", "Shipped"]);
    assert!(lines.iter().all(|e| e["correlationId"] == "tail-req-1"));
}
