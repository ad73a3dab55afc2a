//! Partitions through the server: their number kept with the data directory, work spread over
//! them and one answer from all of them, the rule that a unit writes in one partition only,
//! and the operations that name a partition. (The rest of the suite runs at any number of
//! partitions: `CARSHARE_PARTITIONS=4` runs it at four.)

use serde_json::{Value, json};

use crate::common::{DataDir, TestServer, sample};

#[test]
fn the_number_of_partitions_is_kept_with_the_data_directory() {
    let s = DataDir::new().start(&["--partitions", "3"]);
    assert_eq!(s.partitions(), 3);
    let product = s.register_product("kept", 10);
    let order = s.order(product, 1)["id"].as_u64().unwrap();
    let (clean, _, dir) = s.terminate();
    assert!(clean);

    // Started as another number, by flag or by environment: refused, saying which to use.
    let (failed, stderr, dir) = dir.refused(&["--partitions", "1"], &[], 10);
    assert!(failed, "{stderr}");
    assert!(
        stderr.contains("made with 3 partition(s)") && stderr.contains("--partitions 3"),
        "{stderr}"
    );
    let (failed, stderr, dir) = dir.refused(&[], &[("CARSHARE_PARTITIONS", "2")], 10);
    assert!(failed && stderr.contains("made with 3 partition(s)"), "{stderr}");
    for (n, why) in [("0", "must be from 1 to 64"), ("65", "must be from 1 to 64")] {
        let (failed, stderr, _) = DataDir::new().refused(&["--partitions", n], &[], 10);
        assert!(failed && stderr.contains(why), "{n}: {stderr}");
    }
    // Nothing was harmed by the refusals.
    let s = dir.start(&["--partitions", "3"]);
    assert_eq!(s.get(&format!("/orders/{order}")).status, 200);
    assert_eq!(s.get(&format!("/products/{product}")).json()["qty"], 9);
}

#[test]
fn work_spreads_over_every_partition_and_one_answer_comes_from_all_of_them() {
    let s = DataDir::new().start(&["--partitions", "4"]);
    let product = s.register_product("spread", 1000);
    let mut ids: Vec<u64> = (0..40)
        .map(|q| s.order(product, 1 + q % 5)["id"].as_u64().unwrap())
        .collect();
    s.settle();
    // Ids say where they live, and the orders are spread evenly.
    let mut per_partition = [0; 4];
    for id in &ids {
        per_partition[((id - 1) % 4) as usize] += 1;
    }
    assert_eq!(per_partition, [10; 4], "{ids:?}");
    // Every partition committed: its writer runs and its head moved.
    let ready = s.get("/health/ready").json();
    let parts = ready["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 4, "{ready}");
    for p in parts {
        assert_eq!(p["writer"], "running", "{ready}");
        assert!(p["head"].as_u64().unwrap() > 0, "{ready}");
        assert_eq!(p["lag"], 0, "{ready}");
    }
    let scrape = s.scrape();
    for p in 0..4 {
        let label = format!(r#"partition="{p}""#);
        assert!(
            sample(&scrape, "carshare_commit_batch_units_count", &label) > 0.0,
            "{p}"
        );
    }
    // Listings come from every partition, in order, page by page, counts summed.
    ids.sort();
    for (page, size) in [(0, 7), (2, 7), (5, 7), (1, 16)] {
        let body = s
            .get(&format!("/orders?page={page}&size={size}&sort=id,asc"))
            .json();
        assert_eq!(body["page"]["totalElements"], 40);
        let got: Vec<u64> = body["_embedded"]["orders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_u64().unwrap())
            .collect();
        let want: Vec<u64> = ids.iter().copied().skip(page * size).take(size).collect();
        assert_eq!(got, want, "page {page} of {size}");
    }
    let by_qty = s.get("/orders?size=40&sort=qty,desc").json();
    let qtys: Vec<i64> = by_qty["_embedded"]["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["qty"].as_i64().unwrap())
        .collect();
    assert!(
        qtys.windows(2).all(|w| w[0] >= w[1]) && qtys.len() == 40,
        "{qtys:?}"
    );
    // Stock, kept where the product lives, counts every partition's orders once.
    let taken: i64 = qtys.iter().sum();
    assert_eq!(s.get(&format!("/products/{product}")).json()["qty"], 1000 - taken);
}

#[test]
fn a_unit_that_would_write_in_two_partitions_is_refused_naming_the_rule() {
    let s = TestServer::with_auditor_and("3", &["--partitions", "4"]);
    // Products are made round robin from partition 0: the first lives where the auditor
    // does (partition 0), the second in partition 1.
    let home = s.register_product("home", 5);
    let away = s.register_product("away", 5);
    assert_eq!(((home - 1) % 4, (away - 1) % 4), (0, 1));
    let before = s.events().len();

    let restock = |product: u64| {
        let body = json!({ "productId": product, "qty": 50 }).to_string();
        s.request(
            "POST",
            "/audits/restock",
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
    };
    let r = restock(away);
    assert_eq!(r.status, 500, "{}", r.body);
    let e: Value = r.json();
    assert_eq!(e["error"], "outside_partition", "{e}");
    let message = e["message"].as_str().unwrap();
    assert!(
        message.contains("partition 1") && message.contains("partition 0"),
        "{message}"
    );
    assert!(
        message.contains("events"),
        "the message says what to do instead: {message}"
    );
    // Nothing of the unit stays: neither the restock nor the product's change.
    assert_eq!(s.get(&format!("/products/{away}")).json()["qty"], 5);
    assert_eq!(s.events().len(), before);

    // The same unit in one partition commits.
    let r = restock(home);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.get(&format!("/products/{home}")).json()["qty"], 50);
}

#[test]
fn operations_name_the_partition_and_refuse_one_that_is_not() {
    let s = TestServer::with_auditor_and("2", &["--partitions", "2"]);
    let product = s.register_product("ops", 100);
    assert_eq!(
        s.request("PUT", "/audits/mode", &[], br#"{"failing":true}"#)
            .status,
        200
    );
    let order = s.order(product, 1)["id"].as_u64().unwrap();
    assert_eq!((order - 1) % 2, 1, "the order lives in partition 1");
    s.settle();
    // The auditor runs in partition 0 and parked an event of partition 1: the letter says both.
    let dead = s.dead_letters();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["subscriber"], "auditor");
    assert_eq!(dead[0]["partition"], 0);
    assert_eq!(dead[0]["event"]["partition"], 1);
    let position = dead[0]["position"].as_str().unwrap().to_string();
    assert_eq!(position, format!("1:{}", dead[0]["event"]["seq"]));
    // Positions that are not are refused or not found, never taken for another.
    for (bad, status) in [("2:1", 404), ("x:1", 404), ("1:999", 404), ("0:1", 404)] {
        let r = s.admin("POST", &format!("/admin/dead-letters/auditor/{bad}/retry"));
        assert_eq!(r.status, status, "{bad}: {}", r.body);
    }
    assert_eq!(
        s.request("PUT", "/audits/mode", &[], br#"{"failing":false}"#)
            .status,
        200
    );
    let r = s.admin("POST", &format!("/admin/dead-letters/auditor/{position}/retry"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["position"], position);
    assert!(s.dead_letters().is_empty());

    // Events: one partition at a time, by `partition` or `after=partition:seq`.
    let p1 = s.admin("GET", "/admin/events?partition=1").json();
    assert_eq!(p1["partition"], 1);
    assert_eq!(p1["partitions"], 2);
    assert!(
        p1["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["partition"] == 1)
    );
    for bad in ["partition=2", "partition=-1", "after=2:0", "after=1:x"] {
        let r = s.admin("GET", &format!("/admin/events?{bad}"));
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert!(r.json()["message"].as_str().unwrap().contains("partition") || bad.ends_with(":x"));
    }

    // A cursor names the partition it is kept in and the partition whose events it reads.
    let cursors = s.cursors("auditor");
    assert_eq!(
        cursors.iter().map(|c| (c.0, c.1)).collect::<Vec<_>>(),
        [(0, 0), (0, 1)],
        "a context handled in one place reads every partition there"
    );
    let r = s.admin_with(
        "POST",
        "/admin/contexts/auditor/cursor",
        br#"{"seq":0,"partition":0,"source":1}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["source"], 1);
    let r = s.admin_with(
        "POST",
        "/admin/contexts/auditor/cursor",
        br#"{"seq":0,"source":2}"#,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    s.settle();
    assert_eq!(s.context("auditor")["subscriber"]["lag"], 0);
}
