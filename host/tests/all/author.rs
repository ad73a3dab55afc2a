//! What a new context author does, start to end: `carshare new context`, fill it in, test it
//! with the harness, build it, add it to a running server, walk it over HTTP, swap a v2,
//! restart, and find the same contexts and versions running; then `carshare dev run`, which
//! rebuilds and swaps on save. The crate lives outside this
//! repository's tree (a temporary directory) and builds into a target directory of its own
//! under this crate's scratch space, kept between runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::common::{DataDir, TestServer, carshare, temp_dir};

/// Where the author's builds go: kept between runs, so a warm run rebuilds only the crate.
fn target() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("author-target")
}

/// Runs cargo in `dir` with `args`; fails the test with cargo's words.
fn cargo(dir: &Path, args: &[&str]) {
    let started = Instant::now();
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target())
        // The built-in contexts the harness runs: the ones this build made, not a second build.
        .env(
            "CARSHARE_PREBUILT_CONTEXTS",
            Path::new(env!("CARSHARE_PLUGINS_TARGET_DIR")).join("wasm32-wasip2/release"),
        )
        .output()
        .expect("run cargo");
    eprintln!(
        "[author] cargo {} took {:.1} s",
        args.join(" "),
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "cargo {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Posts a rating, which `version` of the context must take.
fn rate(s: &TestServer, body: &str, version: &str) -> crate::common::Resp {
    let r = s.post("/ratings", body);
    assert_eq!(
        (r.status, r.header("x-carshare-context")),
        (201, Some(version)),
        "{}",
        r.body
    );
    r
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} is not in {}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

#[test]
fn a_new_author_makes_tests_adds_swaps_and_restarts_a_context() {
    let home = temp_dir();
    let dir = home.path().join("rating");
    let made = carshare(&["new", "context", "rating", "--dir", dir.to_str().unwrap()], &[]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    assert!(String::from_utf8_lossy(&made.stdout).contains("made context rating"));
    // Made twice: refused, nothing overwritten.
    let again = carshare(&["new", "context", "rating", "--dir", dir.to_str().unwrap()], &[]);
    assert!(!again.status.success());

    // Filled in: a rating has stars, 1 to 5.
    let lib = dir.join("src/lib.rs");
    edit(
        &lib,
        "    pub note: String,\n}",
        "    pub note: String,\n    /// 1 to 5.\n    pub stars: i64,\n}",
    );
    edit(
        &lib,
        "    let note = Body(req.json_object()?).string(\"note\", 200)?;",
        "    let body = Body(req.json_object()?);\n    let note = body.string(\"note\", 200)?;\n    let stars = body.int(\"stars\", 1, 5)?;",
    );
    edit(
        &lib,
        "        note,\n    };",
        "        note,\n        stars,\n    };",
    );
    let test = dir.join("tests/rating.rs");
    edit(
        &test,
        r#"json!({"note": "first"})"#,
        r#"json!({"note": "first", "stars": 4})"#,
    );

    // Its own harness test, as its author runs it.
    cargo(&dir, &["test", "--release"]);
    cargo(&dir, &["build", "--release", "--target", "wasm32-wasip2"]);
    let wasm = target().join("wasm32-wasip2/release/rating.wasm");
    let v1 = home.path().join("rating-0.1.0.wasm");
    std::fs::copy(&wasm, &v1).unwrap();

    // Added to a running server, and walked over HTTP.
    let s = TestServer::start(&[]);
    let url = format!("http://{}", s.addr);
    let env = [("CARSHARE_URL", url.as_str())];
    let added = carshare(&["contexts", "add", "rating", v1.to_str().unwrap()], &env);
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    rate(&s, r#"{"note": "smooth", "stars": 5}"#, "rating/0.1.0");
    let bad = s.post("/ratings", r#"{"note": "smooth", "stars": 9}"#);
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(s.total("/ratings"), 1);

    // Version 2 keeps notes in capitals; swapped in while it serves.
    edit(
        &dir.join("Cargo.toml"),
        "version = \"0.1.0\"",
        "version = \"0.2.0\"",
    );
    edit(
        &lib,
        "        note,\n        stars,",
        "        note: note.to_uppercase(),\n        stars,",
    );
    cargo(&dir, &["build", "--release", "--target", "wasm32-wasip2"]);
    let swapped = carshare(&["contexts", "swap", "rating", wasm.to_str().unwrap()], &env);
    assert!(
        swapped.status.success(),
        "{}",
        String::from_utf8_lossy(&swapped.stderr)
    );
    let r = rate(&s, r#"{"note": "quiet", "stars": 4}"#, "rating/0.2.0");
    assert_eq!(r.json()["note"], "QUIET");
    let events = s.events_of(&["RatingCreated"]);
    assert_eq!(events.len(), 2, "{events:?}");

    // Restarted with no flag at all: the same contexts, at the same versions, with their data.
    let versions = |s: &TestServer| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = s.admin("GET", "/admin/contexts").json()["contexts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["version"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = versions(&s);
    assert!(before.contains(&("rating".into(), "0.2.0".into())), "{before:?}");
    let (clean, _, data): (bool, Vec<String>, DataDir) = s.terminate();
    assert!(clean);
    let s = data.start(&[]);
    assert_eq!(versions(&s), before);
    assert_eq!(s.total("/ratings"), 2);
    assert_eq!(
        s.get("/ratings/1").header("x-carshare-context"),
        Some("rating/0.2.0")
    );
}
