//! The OpenAPI document: built from the running contexts (a swap changes it), and held to by
//! the real server under schemathesis (from PyPI, installed into the target directory on first
//! use): every generated request, business and admin, gets a documented status with a body
//! that matches its schema, and never a 5xx.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::common::{TestComponent, TestServer};

/// The schemathesis release the tests run.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// The `schemathesis` command, installed into a virtualenv under the target directory.
fn schemathesis() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("schemathesis-venv");
    let bin = venv.join("bin").join("schemathesis");
    if bin.exists() {
        return bin;
    }
    let ok = |c: &mut Command| c.status().map(|s| s.success()).unwrap_or(false);
    assert!(
        ok(Command::new("python3").arg("-m").arg("venv").arg(&venv)),
        "python3 -m venv failed"
    );
    assert!(
        ok(Command::new(venv.join("bin").join("pip")).args(["install", "--quiet", SCHEMATHESIS])),
        "pip install {SCHEMATHESIS} failed"
    );
    bin
}

fn document(s: &TestServer) -> Value {
    let r = s.get("/openapi.json");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

#[test]
fn the_document_describes_what_runs_and_follows_a_swap() {
    let s = TestServer::start(&[]);
    let doc = document(&s);
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/orders",
        "/orders/{id}",
        "/payments",
        "/products/{id}",
        "/deliveries",
        "/cancellations",
        "/customerpages/search/findByCustomerId",
        "/health/ready",
        "/admin/contexts/{name}",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    let place = &doc["paths"]["/orders"]["post"];
    assert_eq!(
        place["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/NewOrder"
    );
    for status in ["201", "400", "422", "503"] {
        assert!(
            place["responses"][status].is_object(),
            "POST /orders documents {status}"
        );
    }
    assert_eq!(
        place["responses"]["201"]["links"]["GETorder"]["operationId"],
        doc["paths"]["/orders/{id}"]["get"]["operationId"]
    );
    assert!(doc["components"]["schemas"]["Order"]["properties"]["status"].is_object());
    assert!(doc["components"]["schemas"]["Error"].is_object());

    // A context swapped for one that describes no operation takes its paths with it; rolled
    // back, they are there again.
    let declining = std::fs::read(TestComponent::PaymentDeclining.path()).unwrap();
    assert_eq!(
        s.admin_with("PUT", "/admin/contexts/payment", &declining).status,
        200
    );
    assert!(document(&s)["paths"]["/payments"].is_null());
    assert_eq!(s.admin("POST", "/admin/contexts/payment/rollback").status, 200);
    assert!(document(&s)["paths"]["/payments"]["get"].is_object());
}

#[test]
fn schemathesis_finds_no_undocumented_status_and_no_server_error() {
    let st = schemathesis();
    let s = TestServer::start(&[]);
    // Something to order, so that generated orders can succeed too.
    s.register_product("schemathesis", 1_000_000);
    let url = format!("http://{}/openapi.json", s.addr);
    let out = Command::new(st)
        .args(["run", &url])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance,response_headers_conformance",
            "--max-examples",
            "30",
            "--seed",
            "20261130",
            "--header",
            &format!("Authorization: Bearer {}", crate::common::TOKEN),
        ])
        .env("NO_COLOR", "1")
        .output()
        .expect("run schemathesis");
    let report = String::from_utf8_lossy(&out.stdout);
    let summary = report.split("SUMMARY").last().unwrap_or_default();
    eprintln!("schemathesis:{summary}");
    assert!(
        out.status.success(),
        "schemathesis failed:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(summary.contains("passed"), "{summary}");
}
