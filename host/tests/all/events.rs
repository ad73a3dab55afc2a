//! The event catalog: every context declares the events it publishes, with their payloads'
//! schemas, and names the publisher of each event it subscribes to. A subscription that could
//! never fire is refused at start, add and swap; one waiting for a context not loaded yet is
//! accepted with a warning; an undeclared event is never published. `/asyncapi.json` shows
//! the catalog, checked here by the AsyncAPI initiative's own parser (`@asyncapi/parser` from
//! npm, installed by this test when missing).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::common::{DataDir, TestComponent, TestServer};

fn bytes(c: TestComponent) -> Vec<u8> {
    std::fs::read(c.path()).unwrap()
}

/// A directory with `@asyncapi/parser` installed (from the committed lock file) and the script.
fn parser() -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/asyncapi");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("asyncapi");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["package.json", "package-lock.json", "validate.mjs"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    if !dir.join("node_modules/@asyncapi/parser").exists() {
        let ok = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "npm ci (@asyncapi/parser) failed");
    }
    dir
}

/// `/asyncapi.json` of `s`, validated by the parser: its summary (see `validate.mjs`).
fn validated(s: &TestServer) -> Value {
    let r = s.get("/asyncapi.json");
    assert_eq!(r.status, 200, "{}", r.body);
    let dir = parser();
    let file = dir.join(format!("asyncapi-{}.json", s.addr.port()));
    std::fs::write(&file, &r.body).unwrap();
    let out = Command::new("node")
        .arg(dir.join("validate.mjs"))
        .arg(&file)
        .output()
        .expect("run node");
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "the parser said nothing usable ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(out.status.success() && summary["valid"] == true, "{summary:#}");
    assert_eq!(summary["problems"], serde_json::json!([]), "{summary:#}");
    summary
}

#[test]
fn the_asyncapi_document_lists_every_event_with_its_schema_and_a_real_parser_accepts_it() {
    let s = TestServer::start(&[]);
    let summary = validated(&s);
    let channels = summary["channels"].as_object().unwrap();
    let mut names: Vec<&str> = channels.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "DeliveryCanceled",
            "OrderCancelled",
            "Ordered",
            "OutOfStock",
            "Paid",
            "PayCancelled",
            "ProductChanged",
            "ProductRegistered",
            "Shipped"
        ]
    );
    let ordered = &summary["channels"]["Ordered"];
    assert_eq!(ordered["send"], serde_json::json!(["order"]));
    assert_eq!(ordered["receive"], serde_json::json!(["customerpage", "product"]));
    assert_eq!(ordered["required"], serde_json::json!(["id", "productId", "qty"]));
    assert_eq!(
        summary["channels"]["Paid"]["receive"],
        serde_json::json!(["customerpage", "delivery", "order"])
    );
    // Nobody subscribes to product's registrations but order's replica.
    assert_eq!(
        summary["channels"]["ProductRegistered"]["receive"],
        serde_json::json!(["order"])
    );

    // What each context publishes is in the admin API too, and what it published matches.
    let delivery = s.context("delivery");
    assert_eq!(
        delivery["publishes"],
        serde_json::json!(["Shipped", "DeliveryCanceled"])
    );
    let product = s.register_product("catalog", 3);
    s.order(product, 1);
    s.settle();
    let published: Vec<String> = s
        .events()
        .iter()
        .map(|e| e["eventType"].as_str().unwrap_or_default().to_string())
        .collect();
    for t in &published {
        assert!(
            channels.contains_key(t),
            "{t} was published but is not in the catalog"
        );
    }
    assert!(published.iter().any(|t| t == "Shipped"), "{published:?}");
    // The document follows the base URL clients reach it on, like the OpenAPI one.
    let doc = s.get("/asyncapi.json").json();
    assert_eq!(doc["servers"]["log"]["pathname"], "/admin/events");
    assert_eq!(doc["servers"]["log"]["host"], s.addr.to_string());
}

#[test]
fn a_misspelled_subscription_is_refused_at_start_at_add_and_at_swap() {
    let v2 = TestComponent::StrayV2.path();

    // At start: the server does not come up, and says what is wrong and what was meant.
    let arg = format!("stray={v2}");
    let (failed, stderr, dir) = DataDir::new().refused(&["--context", &arg], &[], 60);
    assert!(failed, "{stderr}");
    assert!(
        stderr.contains("stray subscribes to DeliveryCancelled from delivery")
            && stderr.contains("did you mean DeliveryCanceled?"),
        "{stderr}"
    );

    // The refused start recorded nothing: started again without it, the system runs as before.
    // Added to it: refused with 409, nothing added.
    let s = dir.start(&[]);
    let r = s.admin_with("POST", "/admin/contexts/stray", &bytes(TestComponent::StrayV2));
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (409, Some("event_catalog")),
        "{}",
        r.body
    );
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("did you mean DeliveryCanceled?")
    );
    assert!(
        !s.admin("GET", "/admin/contexts").body.contains("\"stray\""),
        "nothing added"
    );

    // Version 1 waits for a `rating` context that is not loaded: accepted, with a warning.
    let r = s.admin_with("POST", "/admin/contexts/stray", &bytes(TestComponent::Stray));
    assert!(r.status == 200 || r.status == 201, "{}", r.body);
    assert!(
        s.log_line(
            &["stray subscribes to Rated from rating, which is not loaded"],
            10
        )
        .is_some(),
        "the waiting subscription is logged"
    );
    let summary = validated(&s);
    assert_eq!(
        summary["channels"]["Strayed"]["send"],
        serde_json::json!(["stray"])
    );
    assert_eq!(
        summary["channels"]["Shipped"]["receive"],
        serde_json::json!(["customerpage", "order", "stray"])
    );

    // Swapped to the misspelled version: refused, version 1 goes on serving.
    let r = s.admin_with("PUT", "/admin/contexts/stray", &bytes(TestComponent::StrayV2));
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (409, Some("event_catalog")),
        "{}",
        r.body
    );
    assert_eq!(s.context("stray")["version"], "1.0.0");

    // Its typed subscription to delivery's event fires.
    let product = s.register_product("stray", 5);
    s.order(product, 1);
    s.settle();
    assert_eq!(s.get("/strays").json()["shipped"], 1);
}

#[test]
fn an_undeclared_event_is_never_published() {
    let v1 = format!("stray={}", TestComponent::Stray.path());
    let s = TestServer::start(&["--context", &v1]);
    let declared = s.post("/strays", r#"{"type": "Strayed"}"#);
    assert_eq!(declared.status, 201, "{}", declared.body);
    let undeclared = s.post("/strays", r#"{"type": "Sneaked"}"#);
    assert_eq!(undeclared.status, 500, "{}", undeclared.body);
    assert!(
        s.log_line(
            &["stray published \"Sneaked\", which its manifest does not declare"],
            10
        )
        .is_some(),
        "the fault names the undeclared type"
    );
    // The whole unit was undone: no event, and the count it wrote did not commit.
    let types: Vec<String> = s
        .events()
        .iter()
        .map(|e| e["eventType"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(types.iter().filter(|t| *t == "Strayed").count(), 1, "{types:?}");
    assert!(!types.iter().any(|t| t == "Sneaked"), "{types:?}");
    let again = s.post("/strays", r#"{"type": "Strayed"}"#);
    assert_eq!(again.json()["count"], 2, "{}", again.body);
}
