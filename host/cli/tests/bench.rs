//! `writ bench`, run as a user would: it starts its own gateway and floor, sets up tenants,
//! holds escalations, loads both, and reports. Counts are checked, never timings.

use std::process::Command;

use serde_json::Value;
use writ_tests::artifacts;

fn writ_bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_writ"))
        .arg("bench")
        .args(args)
        .output()
        .expect("run writ bench")
}

#[test]
fn bench_loads_the_floor_and_the_gateway_and_reports_every_decision() {
    let out = writ_bench(&[
        "--policy",
        artifacts::PAYMENTS_LIMITS,
        "--tenants",
        "2",
        "--connections",
        "4",
        "--requests",
        "400",
        "--warmup",
        "0",
        "--held",
        "5",
        "--rounds",
        "2",
        "--json",
        "-",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    // The table goes to stderr when the JSON takes stdout.
    assert!(stderr.contains("writ / floor:"), "{stderr}");

    // Two rounds, each loading the floor and then the gateway.
    let runs = report["runs"].as_array().unwrap();
    let order: Vec<(&str, u64)> = runs
        .iter()
        .map(|r| (r["target"].as_str().unwrap(), r["round"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        order,
        [("floor", 1), ("writ", 1), ("floor", 2), ("writ", 2)],
        "{report}"
    );
    let ratios = &report["writ_over_floor_percent"];
    assert_eq!(ratios["by_round"].as_array().unwrap().len(), 2, "{ratios}");
    assert!(
        ratios["median"].as_f64().is_some_and(|m| m > 0.0),
        "{ratios}"
    );
    assert!(stderr.contains("over 2 rounds"), "{stderr}");
    for run in runs {
        assert_eq!(run["requests"], 400, "{run}");
        assert_eq!(run["errors"], 0, "{run}");
        assert_eq!(run["statuses"]["200"], 400, "{run}");
        let l = &run["latency_us"];
        assert!(l["p50"].as_u64() <= l["p99"].as_u64() && l["p99"].as_u64() <= l["max"].as_u64());
        // Both targets are processes the bench knows, so their CPU time is reported (a run this
        // short may round to zero ticks).
        for cpu in ["server_cpu_us_per_request", "client_cpu_us_per_request"] {
            assert!(
                run[cpu].as_f64().is_some_and(|us| us >= 0.0),
                "{cpu}: {run}"
            );
        }
        // The machine's unused share, when any tick passed in so short a window.
        let idle = &run["machine_idle_percent"];
        assert!(
            idle.is_null() || idle.as_f64().is_some_and(|p| (0.0..=100.0).contains(&p)),
            "machine_idle_percent: {run}"
        );
    }
    for writ in runs.iter().filter(|r| r["target"] == "writ") {
        // Every kind of the mix was sent and got the decision payments-limits gives it, in
        // every round.
        let sent = |kind: &str| writ["sent"][kind].as_u64().unwrap_or(0);
        let decided = |d: &str| writ["decisions"][d].as_u64().unwrap_or(0);
        for kind in ["payment", "email", "unknown", "over_limit"] {
            assert!(sent(kind) > 0, "{kind} not sent: {writ}");
        }
        assert_eq!(decided("ALLOW"), sent("payment") + sent("email"), "{writ}");
        assert_eq!(decided("BLOCK"), sent("unknown"), "{writ}");
        assert_eq!(decided("ESCALATE"), sent("over_limit"), "{writ}");
    }
    for floor in runs.iter().filter(|r| r["target"] == "floor") {
        assert_eq!(floor["decisions"]["ALLOW"], 400);
    }

    // Five calls were held at once, then rejected and answered BLOCK.
    assert_eq!(report["held"]["held"], 5);
    assert_eq!(report["held"]["answered"], 5);
    assert!(report["held"]["rss_held_bytes"].as_u64().unwrap() > 0);
    assert!(report["gateway_rss_bytes"]["after_load"].as_u64().unwrap() > 0);
}

#[test]
fn bench_refuses_targets_off_loopback_and_out_of_bounds_settings() {
    for (args, expected) in [
        (
            vec!["--gateway", "http://192.0.2.1:4587", "--operator-key", "k"],
            "not a loopback address",
        ),
        (vec!["--connections", "0"], "connections must be"),
        (vec!["--requests", "0"], "requests must be"),
        (vec!["--duration", "601"], "duration must be"),
        (vec!["--mix", "payment=0"], "the mix has no weight"),
        (vec!["--mix", "refund=5"], "mix kind `refund`"),
        (vec!["--tenants", "0"], "tenants must be"),
        (vec!["--rounds", "0"], "rounds must be"),
        (vec!["--rounds", "11"], "rounds must be"),
    ] {
        let mut all = vec!["--policy", artifacts::PAYMENTS_LIMITS];
        all.extend(args.iter().copied());
        let out = writ_bench(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// `writ serve --pool-slots 2` serves 8 connections, every call getting its policy's decision.
/// (That admission waits for a slot is tested with calls long enough to overlap, in
/// `tests/tests/gateway.rs`.)
#[test]
fn a_gateway_with_a_small_pool_answers_more_connections_than_it_has_slots() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let dir = tempfile::tempdir().unwrap();
    let key = "wk_op_pool_test_0123456789abcdef0123456789abcdef";
    let mut gateway = Command::new(env!("CARGO_BIN_EXE_writ"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--pool-slots",
            "2",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("WRIT_OPERATOR_KEY", key)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start writ serve");
    let url = BufReader::new(gateway.stdout.take().unwrap())
        .lines()
        .map(|line| line.expect("gateway stdout"))
        .find_map(|line| line.strip_prefix("listening on ").map(str::to_owned))
        .expect("the gateway says where it listens");
    let out = Command::new(env!("CARGO_BIN_EXE_writ"))
        .args([
            "bench",
            "--policy",
            artifacts::PAYMENTS_LIMITS,
            "--gateway",
            &url,
        ])
        .args(["--no-floor", "--connections", "8", "--requests", "300"])
        .args(["--warmup", "0", "--json", "-"])
        .env("WRIT_OPERATOR_KEY", key)
        .output()
        .expect("run writ bench");
    gateway.kill().unwrap();
    gateway.wait().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let run = &report["runs"][0];
    assert_eq!(run["requests"], 300, "{run}");
    assert_eq!(run["errors"], 0, "{run}");
    let sent = |kind: &str| run["sent"][kind].as_u64().unwrap_or(0);
    let decided = |d: &str| run["decisions"][d].as_u64().unwrap_or(0);
    assert_eq!(decided("ALLOW"), sent("payment") + sent("email"), "{run}");
    assert_eq!(decided("BLOCK"), sent("unknown"), "{run}");
    assert_eq!(decided("ESCALATE"), sent("over_limit"), "{run}");
}

#[test]
fn the_noisy_neighbour_mode_loads_the_neighbour_alone_then_beside_a_flood_and_compares() {
    let out = writ_bench(&[
        "--policy",
        artifacts::PAYMENTS_LIMITS,
        "--flood-policy",
        artifacts::HOSTILE,
        "--flood-connections",
        "8",
        "--connections",
        "4",
        "--requests",
        "300",
        "--warmup",
        "0",
        "--json",
        "-",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let order: Vec<&str> = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["target"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["alone", "flooded"], "{report}");
    for run in report["runs"].as_array().unwrap() {
        assert_eq!(run["requests"], 300, "{run}");
        assert_eq!(run["errors"], 0, "{run}");
    }
    let answered: u64 = report["flood"]["answers"][0]["statuses"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert!(answered > 0, "the flood ran: {report}");
    assert!(
        report["neighbour_kept_percent"]["median"]
            .as_f64()
            .is_some_and(|k| k > 0.0),
        "{report}"
    );
    assert!(
        stderr.contains("neighbour throughput kept under the flood"),
        "{stderr}"
    );
}

#[test]
fn bench_starts_two_nodes_on_a_postgres_store_and_spreads_the_load_over_them() {
    let url = writ_tests::postgres::PgCluster::shared().database();
    let out = writ_bench(&[
        "--policy",
        artifacts::PAYMENTS_LIMITS,
        "--store",
        &url,
        "--nodes",
        "2",
        "--no-floor",
        "--connections",
        "4",
        "--requests",
        "200",
        "--warmup",
        "0",
        "--json",
        "-",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("PostgreSQL store").count(),
        2,
        "two gateways on the store: {stderr}"
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let run = &report["runs"][0];
    assert_eq!(run["target"], "writ", "{report}");
    let decided: u64 = run["decisions"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(decided, 200, "{report}");
    // Both nodes' decisions are in the one store: checked offline.
    let verify = Command::new(env!("CARGO_BIN_EXE_writ"))
        .args(["audit", "verify", "--store", &url])
        .output()
        .unwrap();
    assert!(verify.status.success(), "{verify:?}");
}
