//! The live system page in a real browser: Debian's Chromium, driven by playwright-core from
//! npm (both installed by this test when missing; nothing downloads a browser of its own).
//! `host/tests/ui/system-page.mjs` logs in, sees orders move the counters, stops and starts a
//! context, retries a dead letter, and takes the README's screenshot (left in
//! `target/tmp/ui/system-page.png`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{TOKEN, TestServer};

const CHROMIUM: &str = "/usr/bin/chromium";

fn run(cmd: &mut Command) -> bool {
    cmd.status().map(|s| s.success()).unwrap_or(false)
}

/// Debian's Chromium, installed with apt when missing.
pub(crate) fn chromium() {
    if Path::new(CHROMIUM).exists() {
        return;
    }
    let apt = |args: &[&str]| {
        run(Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    assert!(
        apt(&["install", "-y", "chromium"]) || (apt(&["update"]) && apt(&["install", "-y", "chromium"])),
        "the browser test needs Debian's chromium: apt-get install -y chromium failed"
    );
}

/// A directory with playwright-core installed (from the committed lock file) and the scripts.
pub(crate) fn driver() -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui");
    std::fs::create_dir_all(&dir).unwrap();
    for f in [
        "package.json",
        "package-lock.json",
        "system-page.mjs",
        "cluster-line.mjs",
    ] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    if !dir.join("node_modules/playwright-core").exists() {
        assert!(
            run(Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)),
            "npm ci (playwright-core) failed"
        );
    }
    dir
}

#[test]
fn the_system_page_shows_the_system_live_and_drives_it() {
    chromium();
    let dir = driver();
    let s = TestServer::with_auditor("2");
    let product = s.register_product("ui", 1000);
    assert_eq!(product, 1, "the page's script orders product 1");
    // A dead letter for the page to retry.
    let r = s.request("PUT", "/audits/mode", &[], br#"{"failing":true}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    s.order(product, 1);
    let parked = |s: &TestServer| -> Vec<String> {
        s.dead_letters()
            .iter()
            .map(|d| d["position"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(s.wait_for(20, |s| !parked(s).is_empty()));
    let screenshot = dir.join("system-page.png");
    let out = Command::new("node")
        .arg(dir.join("system-page.mjs"))
        .arg(format!("http://{}", s.addr))
        .arg(TOKEN)
        .arg(&screenshot)
        .arg(s.partitions().to_string())
        .arg(crate::common::TestComponent::Auditor.path())
        .current_dir(&dir)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("all steps passed"),
        "the browser test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(screenshot.exists());
    // The page's orders were parked too while the auditor failed; the one it retried is gone.
    let retried: String = stdout
        .split("retried from the page: auditor ")
        .nth(1)
        .and_then(|rest| Some(rest.split_whitespace().next()?.to_string()))
        .expect("the script names the letter it retried");
    assert!(!parked(&s).contains(&retried), "the page's retry went through");
}
