//! A small run of every scenario against a real relay, so the load
//! generator (and the relay paths it drives: pipelined sends, live pushes,
//! drains, SIGKILL recovery) cannot rot. Not a benchmark: sizes are tiny.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use serde_json::Value;

fn run(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_hush-loadgen")).args(args).arg("--json").output().unwrap();
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

#[test]
fn throughput_delivers_every_pipelined_message_once() {
    let report = run(&["throughput", "--pairs", "3", "--messages", "300", "--window", "64"]);
    assert_eq!(report["scenario"], "throughput");
    assert_eq!(report["delivered"], 900);
    assert_eq!(report["lost"], 0);
    assert_eq!(report["duplicates"], 0);
    assert!(report["msgs_per_s"].as_f64().unwrap() > 0.0);
    assert!(report["relay_rss_kib"].as_u64().unwrap() > 0);
}

#[test]
fn payloads_larger_than_a_wire_frame_arrive_whole() {
    // 600 KB: dozens of WebSocket fragments each way (client to relay,
    // relay to client), reassembled and checked by the recipients.
    let report = run(&["throughput", "--pairs", "2", "--messages", "3", "--window", "1", "--size", "600000"]);
    assert_eq!(report["delivered"], 6);
    assert_eq!(report["lost"], 0);
    assert_eq!(report["duplicates"], 0);
}

#[test]
fn growth_enrols_offline_accounts_before_the_run() {
    let report = run(&["throughput", "--pairs", "2", "--messages", "100", "--accounts", "5000"]);
    assert_eq!(report["offline_accounts"], 5000);
    assert_eq!(report["delivered"], 200);
    assert_eq!(report["lost"], 0);
}

#[test]
fn latency_reports_percentiles() {
    let report = run(&["latency", "--pairs", "2", "--rate", "100", "--seconds", "2"]);
    assert_eq!(report["lost"], 0);
    let (p50, p99) = (report["p50_ms"].as_f64().unwrap(), report["p99_ms"].as_f64().unwrap());
    assert!(p50 > 0.0 && p50 <= p99);
}

#[test]
fn drain_empties_an_offline_mailbox() {
    let report = run(&["drain", "--messages", "1500"]);
    assert_eq!(report["delivered"], 1500);
    assert_eq!(report["lost"], 0);
    assert!(report["drain_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn idle_measures_memory_per_connection() {
    let report = run(&["idle", "--connections", "20"]);
    assert_eq!(report["connections"], 20);
    assert!(report["kib_per_connection"].is_number());
}

#[test]
fn crash_loses_no_acknowledged_message() {
    let report = run(&["crash", "--pairs", "3", "--rate", "60", "--seconds", "3"]);
    assert!(report["acked"].as_u64().unwrap() > 0);
    assert_eq!(report["lost"], 0);
    assert_eq!(report["duplicates"], 0);
}

#[test]
fn vs_mosquitto_runs_the_same_scenarios_against_mosquitto() {
    let report = run(&["throughput", "--pairs", "2", "--messages", "200", "--vs-mosquitto"]);
    assert_eq!(report["lost"], 0);
    assert_eq!(report["mosquitto_lost"], 0);
    assert!(report["mosquitto_msgs_per_s"].as_f64().unwrap() > 0.0);
    assert!(report["ratio"].as_f64().unwrap() > 0.0);
    let report = run(&["latency", "--pairs", "2", "--rate", "100", "--seconds", "1", "--vs-mosquitto"]);
    assert!(report["mosquitto_p99_ms"].as_f64().unwrap() > 0.0);
    let report = run(&["drain", "--messages", "300", "--vs-mosquitto"]);
    assert_eq!(report["mosquitto_lost"], 0);
    assert!(report["mosquitto_drain_s"].as_f64().unwrap() > 0.0);
}
