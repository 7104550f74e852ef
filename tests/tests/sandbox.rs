//! The sandbox against hostile guests: every misbehaviour ends in the right BLOCK within a
//! stated bound, and the engine then evaluates a well-behaved policy correctly. Also load-time
//! validation, with small hostile components written as WAT text.

use std::time::{Duration, Instant};

use rstest::rstest;
use serde_json::json;
use writ_runtime::evaluation::LogLevel;
use writ_runtime::{FixedUsage, Limits, LoadError, Outcome};
use writ_tests::{artifacts, call, component, engine, evaluate, evaluate_with, load};

/// Generous upper bound for any single hostile evaluation in a debug build on a loaded machine:
/// the limits themselves are 100 ms and 50 million fuel.
const BOUND: Duration = Duration::from_secs(5);

fn assert_engine_still_healthy() {
    let policy = load(artifacts::PAYMENTS_LIMITS);
    let e = evaluate(
        &policy,
        &call(
            "payments.initiate",
            json!({"amount": 50, "currency": "GBP"}),
        ),
    );
    assert_eq!(e.decision.outcome, Outcome::Allow, "{:?}", e.decision);
}

#[rstest]
#[case::infinite_loop(artifacts::HOSTILE, "spin", "policy_fuel_exhausted")]
#[case::unbounded_memory(artifacts::HOSTILE, "grow", "policy_memory_limit")]
#[case::deep_recursion(artifacts::HOSTILE, "recurse", "policy_trap")]
#[case::panic(artifacts::HOSTILE, "panic", "policy_trap")]
#[case::huge_reason(artifacts::HOSTILE, "huge-reason", "policy_invalid_result")]
#[case::too_many_codes(artifacts::HOSTILE, "many-codes", "policy_invalid_result")]
#[case::malformed_code(artifacts::HOSTILE, "bad-code", "policy_invalid_result")]
#[case::nan_charge(artifacts::HOSTILE, "nan-charge", "policy_invalid_result")]
#[case::negative_charge(artifacts::HOSTILE, "negative-charge", "policy_invalid_result")]
#[case::infinite_charge(artifacts::HOSTILE, "infinite-charge", "policy_invalid_result")]
#[case::exit(artifacts::HOSTILE, "exit", "policy_trap")]
#[case::usage_flood(artifacts::HOSTILE, "usage-flood", "policy_trap")]
// A lean policy (`writ-policy` without `std`) gets its heap, panic handler and `cabi_realloc`
// from the SDK instead of the standard library: misbehaving, it is blocked the same way.
#[case::lean_panic(artifacts::LEAN_HOSTILE, "panic", "policy_trap")]
#[case::lean_unbounded_memory(artifacts::LEAN_HOSTILE, "grow", "policy_memory_limit")]
fn hostile_guest_is_blocked(#[case] guest: &str, #[case] action: &str, #[case] code: &str) {
    let policy = load(guest);
    let started = Instant::now();
    let e = evaluate(&policy, &call(action, json!({})));
    assert!(
        started.elapsed() < BOUND,
        "{action} took {:?}",
        started.elapsed()
    );
    assert_eq!(
        e.decision.outcome,
        Outcome::Block,
        "{action}: {:?}",
        e.decision
    );
    assert_eq!(e.decision.codes, [code], "{action}: {}", e.decision.reason);
    assert!(e.decision.charges.is_empty());
    assert!(!e.decision.reason.is_empty());
    assert!(e.decision.reason.len() <= 4096);
    assert_engine_still_healthy();
}

#[test]
fn lean_guest_heap_serves_grown_over_aligned_and_passed_in_blocks() {
    let policy = load(artifacts::LEAN_HOSTILE);
    // 300 kB of arguments: the host writes them into the guest through `cabi_realloc`.
    let text = "x".repeat(300_000);
    for _ in 0..3 {
        let e = evaluate(&policy, &call("allocate", json!({ "text": text })));
        assert_eq!(e.decision.outcome, Outcome::Allow, "{:?}", e.decision);
        assert_eq!(
            e.decision.reason,
            "sum 4999950000 misaligned 0 bytes 4950 text 300000"
        );
    }
}

/// The component-level imports of a guest, by name.
fn imports(path: &str) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let mut names = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
        if let wasmparser::Payload::ComponentImportSection(reader) = payload.unwrap() {
            for import in reader {
                names.push(import.unwrap().name.0.to_owned());
            }
        }
    }
    names
}

#[test]
fn example_policies_are_lean_and_import_only_the_writ_interfaces() {
    for (name, path) in [
        ("allow-all", artifacts::ALLOW_ALL),
        ("irreversible-gate", artifacts::IRREVERSIBLE_GATE),
        ("payments-limits", artifacts::PAYMENTS_LIMITS),
        ("rate-limit", artifacts::RATE_LIMIT),
        ("spend-cap", artifacts::SPEND_CAP),
        ("lean-hostile", artifacts::LEAN_HOSTILE),
    ] {
        // Besides interfaces, a component imports the types it uses, by plain name.
        let imports = imports(path);
        assert!(
            imports
                .iter()
                .filter(|i| i.contains(':'))
                .all(|i| i.starts_with("writ:policy/")),
            "{name} imports {imports:?}"
        );
    }
    // A policy on std imports the WASI interfaces Rust's standard library links.
    assert!(
        imports(artifacts::HOSTILE)
            .iter()
            .any(|i| i.starts_with("wasi:"))
    );
}

#[test]
fn loop_past_the_deadline_is_a_timeout() {
    let policy = load(artifacts::HOSTILE);
    let limits = Limits {
        fuel: u64::MAX / 2,
        deadline: Duration::from_millis(50),
        ..Limits::default()
    };
    let started = Instant::now();
    let e = evaluate_with(&policy, &call("spin", json!({})), &limits, &[]);
    let took = started.elapsed();
    assert_eq!(
        e.decision.codes,
        ["policy_timeout"],
        "{}",
        e.decision.reason
    );
    assert!(took >= Duration::from_millis(50), "stopped early: {took:?}");
    assert!(took < BOUND, "took {took:?}");
    assert_engine_still_healthy();
}

#[test]
fn fuel_is_reported_and_bounded_by_the_limit() {
    let policy = load(artifacts::HOSTILE);
    let limits = Limits {
        fuel: 1_000_000,
        ..Limits::default()
    };
    let e = evaluate_with(&policy, &call("spin", json!({})), &limits, &[]);
    assert_eq!(e.decision.codes, ["policy_fuel_exhausted"]);
    assert_eq!(e.fuel_consumed, 1_000_000);
}

#[test]
fn memory_limit_is_per_call() {
    let policy = load(artifacts::HOSTILE);
    let small = Limits {
        memory_bytes: 4 << 20,
        ..Limits::default()
    };
    let e = evaluate_with(&policy, &call("grow", json!({})), &small, &[]);
    assert_eq!(e.decision.codes, ["policy_memory_limit"]);
    assert!(e.decision.reason.contains("4 MiB"), "{}", e.decision.reason);
}

/// On std the SDK's panic hook sends the message; a lean policy's panic handler does.
#[rstest]
#[case::std(artifacts::HOSTILE, "hostile panic")]
#[case::lean(artifacts::LEAN_HOSTILE, "lean panic")]
fn panic_message_reaches_the_reason_and_the_log(#[case] guest: &str, #[case] message: &str) {
    let policy = load(guest);
    let e = evaluate(&policy, &call("panic", json!({})));
    assert!(e.decision.reason.contains(message), "{}", e.decision.reason);
    assert!(
        e.logs
            .iter()
            .any(|l| l.message.starts_with("policy panicked") && l.message.contains(message)),
        "{:?}",
        e.logs
    );
}

#[test]
fn printing_goes_to_the_policy_log_and_the_decision_stands() {
    let policy = load(artifacts::HOSTILE);
    let e = evaluate(&policy, &call("print", json!({})));
    assert_eq!(e.decision.outcome, Outcome::Allow, "{:?}", e.decision);
    let lines: Vec<_> = e
        .logs
        .iter()
        .map(|l| (l.level, l.message.as_str()))
        .collect();
    assert_eq!(
        lines,
        [
            (LogLevel::Info, "hello from a policy"),
            (LogLevel::Warn, "and from its stderr")
        ]
    );
}

/// The clock reads the call's timestamp, sleeping takes no time, the environment is empty,
/// no file can be opened, and randomness is the same for the same call and differs for
/// another: replaying a call replays its decision.
#[test]
fn wasi_answers_from_the_call_alone_and_a_replayed_call_decides_the_same() {
    let policy = load(artifacts::HOSTILE);
    let reason = |action: &str, arguments| evaluate(&policy, &call(action, arguments)).decision;
    let at = call("clock", json!({})).timestamp_ms;
    assert_eq!(reason("clock", json!({})).reason, at.to_string());
    assert_eq!(reason("sleep", json!({})).reason, "0ns");
    assert_eq!(reason("env", json!({})).reason, "[] []");
    let file = reason("file", json!({}));
    assert_eq!(file.codes, ["no_files"], "{file:?}");
    let first = reason("random", json!({"n": 1})).reason;
    assert_eq!(reason("random", json!({"n": 1})).reason, first);
    assert_ne!(reason("random", json!({"n": 2})).reason, first);
}

#[test]
fn a_component_importing_sockets_loads_but_no_socket_call_can_succeed() {
    // CPython's libc imports the socket interfaces: they are linked, every function trapping.
    let text = r#"(component (import "wasi:sockets/tcp@0.2.0" (instance)))"#;
    match compile_wat(text) {
        Err(LoadError::WrongWorld(_)) => {}
        other => panic!("sockets are linked (then evaluate is missing), got {other:?}"),
    }
}

#[test]
fn log_lines_are_capped() {
    let policy = load(artifacts::HOSTILE);
    let e = evaluate(&policy, &call("log-flood", json!({})));
    assert_eq!(e.decision.outcome, Outcome::Allow);
    assert_eq!(e.logs.len(), 64);
    assert_eq!(e.logs_dropped, 10_000 - 64);
}

#[test]
fn every_call_gets_a_fresh_instance() {
    let policy = load(artifacts::HOSTILE);
    for _ in 0..5 {
        let e = evaluate(&policy, &call("count", json!({})));
        assert_eq!(e.decision.reason, "1", "state leaked between calls");
    }
}

#[test]
fn concurrent_evaluations_do_not_interfere() {
    let payments = load(artifacts::PAYMENTS_LIMITS);
    let hostile = load(artifacts::HOSTILE);
    std::thread::scope(|s| {
        for i in 0..8 {
            let (payments, hostile) = (&payments, &hostile);
            s.spawn(move || {
                for _ in 0..20 {
                    if i % 2 == 0 {
                        let e = evaluate(
                            payments,
                            &call(
                                "payments.initiate",
                                json!({"amount": 10, "currency": "USD"}),
                            ),
                        );
                        assert_eq!(e.decision.outcome, Outcome::Allow);
                    } else {
                        let e = evaluate(hostile, &call("count", json!({})));
                        assert_eq!(e.decision.reason, "1");
                    }
                }
            });
        }
    });
}

fn compile_wat(text: &str) -> Result<writ_runtime::CompiledPolicy, LoadError> {
    engine().compile(&wat::parse_str(text).expect("valid WAT"))
}

#[rstest]
#[case::http("wasi:http/outgoing-handler@0.2.0")]
#[case::foreign("evil:net/exfiltrate@1.0.0")]
#[case::future_wasi("wasi:cli/stdout@0.3.0")]
fn component_importing_outside_the_allowed_set_is_refused(#[case] import: &str) {
    let text = format!(r#"(component (import "{import}" (instance)))"#);
    match compile_wat(&text) {
        Err(LoadError::ForbiddenImport(name)) => assert_eq!(name, import),
        other => panic!("expected a forbidden import, got {other:?}"),
    }
}

#[test]
fn component_without_evaluate_is_refused() {
    let err = compile_wat("(component)").unwrap_err();
    assert!(matches!(err, LoadError::WrongWorld(_)), "{err:?}");
    assert!(err.to_string().contains("evaluate"), "{err}");
}

#[test]
fn component_with_a_wrongly_typed_evaluate_is_refused() {
    let err = compile_wat(
        r#"(component
            (core module $m (func (export "f")))
            (core instance $i (instantiate $m))
            (func (export "evaluate") (canon lift (core func $i "f"))))"#,
    )
    .unwrap_err();
    assert!(matches!(err, LoadError::WrongWorld(_)), "{err:?}");
}

#[test]
fn core_module_is_not_a_component() {
    let err = engine()
        .compile(&wat::parse_str("(module)").unwrap())
        .unwrap_err();
    assert!(matches!(err, LoadError::NotAComponent(_)), "{err:?}");
    assert!(err.to_string().contains("core module"), "{err}");
}

#[rstest]
#[case::empty(b"".as_slice())]
#[case::text(b"hello, world".as_slice())]
#[case::truncated_header(b"\0asm\x0d\x00".as_slice())]
fn garbage_is_not_a_component(#[case] bytes: &[u8]) {
    let err = engine().compile(bytes).unwrap_err();
    assert!(matches!(err, LoadError::NotAComponent(_)), "{err:?}");
}

#[test]
fn truncated_component_is_invalid() {
    let bytes = component(artifacts::ALLOW_ALL);
    let err = engine().compile(&bytes[..bytes.len() / 2]).unwrap_err();
    assert!(matches!(err, LoadError::Invalid(_)), "{err:?}");
}

#[test]
fn policy_id_is_the_blake3_of_the_component() {
    let bytes = component(artifacts::ALLOW_ALL);
    let policy = load(artifacts::ALLOW_ALL);
    assert_eq!(policy.id(), blake3::hash(&bytes).to_hex().as_str());
    assert_eq!(policy.size(), bytes.len());
}

#[test]
fn precompiled_artifact_round_trips() {
    let policy = load(artifacts::PAYMENTS_LIMITS);
    let artifact = policy.serialize().unwrap();
    let reloaded = engine()
        .load_precompiled(policy.id(), policy.size(), &artifact)
        .unwrap();
    assert_eq!(reloaded.id(), policy.id());
    let e = evaluate(
        &reloaded,
        &call(
            "payments.initiate",
            json!({"amount": 800, "currency": "GBP"}),
        ),
    );
    assert_eq!(e.decision.codes, ["amount_over_limit"]);
    let err = engine()
        .load_precompiled(policy.id(), policy.size(), b"not an artifact")
        .unwrap_err();
    assert!(matches!(err, LoadError::Artifact(_)), "{err:?}");
}

/// A policy's deadline counts the time it runs, not the time it spends yielded while other
/// evaluations share its thread: 80 evaluations that each need a small part of the deadline,
/// interleaved on one thread so that each takes longer than the deadline from start to end,
/// all finish and allow.
#[test]
fn time_spent_yielded_to_other_evaluations_does_not_count_against_the_deadline() {
    let policy = load(artifacts::HOSTILE);
    let limits = Limits {
        fuel: u64::MAX / 2,
        deadline: Duration::from_millis(500),
        ..Limits::default()
    };
    // Iterations of `burn` that take about 25 ms here, a twentieth of the deadline, from the
    // fastest of three probes (other tests share the machine, and only slow probes lie).
    let probe = 2_000_000u64;
    let fastest = (0..3)
        .map(|_| {
            let e = evaluate_with(
                &policy,
                &call("burn", json!({"iterations": probe})),
                &limits,
                &[],
            );
            assert_eq!(e.decision.outcome, Outcome::Allow, "{:?}", e.decision);
            e.elapsed
        })
        .min()
        .unwrap();
    let iterations = (probe as f64 * 0.025 / fastest.as_secs_f64()).max(1.0) as u64;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let evaluations = runtime.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..80 {
            let (policy, c) = (
                policy.clone(),
                call("burn", json!({"iterations": iterations})),
            );
            set.spawn(async move {
                engine()
                    .evaluate(&policy, &c, &limits, Box::new(FixedUsage::default()))
                    .await
            });
        }
        set.join_all().await
    });
    for e in &evaluations {
        assert_eq!(e.decision.outcome, Outcome::Allow, "{:?}", e.decision);
        assert_eq!(e.decision.reason, format!("counted to {iterations}"));
    }
    // The case this test is about happened: some evaluation took longer than the deadline from
    // start to end, because it yielded to the others.
    let longest = evaluations.iter().map(|e| e.elapsed).max().unwrap();
    assert!(longest > limits.deadline, "longest took {longest:?}");
}

/// `evaluate_blocking` drives a policy that yields at epoch ticks to its end, even when called
/// from a task on a Tokio worker thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn evaluate_blocking_works_inside_a_runtime_task() {
    let policy = load(artifacts::HOSTILE);
    let limits = Limits {
        fuel: u64::MAX / 2,
        ..Limits::default()
    };
    let iterations = 5_000_000u64;
    let e = tokio::spawn(async move {
        evaluate_with(
            &policy,
            &call("burn", json!({"iterations": iterations})),
            &limits,
            &[],
        )
    })
    .await
    .unwrap();
    assert_eq!(e.decision.reason, format!("counted to {iterations}"));
    assert!(
        e.elapsed > Duration::from_millis(1),
        "never reached an epoch tick: {e:?}"
    );
}
