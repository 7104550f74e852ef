//! `writ bench`: the load tool's command, alone or beside a noisy neighbour.

use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::json;

use super::BenchArgs;

/// `writ bench`: set up tenants, optionally hold escalations, load the floor then the gateway,
/// and report.
pub(crate) async fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    use writ_bench::{self as bench, LoadConfig, Spawned, Stop};
    let mut config = LoadConfig {
        connections: args.connections,
        stop: args
            .requests
            .map_or(Stop::Seconds(args.duration), Stop::Requests),
        warmup_s: args.warmup,
        mix: args.mix.clone(),
        metrics_key: None,
    };
    config.validate()?;
    anyhow::ensure!(
        (1..=1000).contains(&args.tenants),
        "tenants must be 1..=1000"
    );
    anyhow::ensure!((1..=10).contains(&args.rounds), "rounds must be 1..=10");
    let policy = std::fs::read(&args.policy)
        .with_context(|| format!("reading {}", args.policy.display()))?;
    let exe = std::env::current_exe().context("finding the writ binary")?;
    let say = |line: &str| eprintln!("writ bench: {line}");

    anyhow::ensure!(
        (1..=8).contains(&args.nodes) && (args.nodes == 1 || args.store_url.is_some()),
        "nodes must be 1..=8, and more than one needs --store"
    );
    anyhow::ensure!(
        args.gateway.is_none() || (args.store_url.is_none() && args.nodes == 1),
        "--gateway loads a running gateway: --store and --nodes start gateways"
    );
    // The gateway: the one given, or fresh ones on a temporary data directory.
    let data_dir = tempfile::Builder::new().prefix("writ-bench-").tempdir()?;
    let mut others = Vec::new();
    let (_started, addr, operator_key, pid) = match &args.gateway {
        Some(url) => {
            let addr = bench::loopback_addr(url)?;
            let key = args
                .operator_key
                .clone()
                .context("--gateway needs --operator-key (or WRIT_OPERATOR_KEY)")?;
            (None, addr, key, args.pid)
        }
        None => {
            let key = format!("wk_op_bench_{}", hex::encode(rand::random::<[u8; 24]>()));
            // Nodes of one store sign and seal with the same keys.
            let (master, checkpoint) = (
                hex::encode(rand::random::<[u8; 32]>()),
                hex::encode(rand::random::<[u8; 32]>()),
            );
            let mut started = Vec::new();
            for node in 0..args.nodes {
                let log =
                    std::fs::File::create(data_dir.path().join(format!("gateway-{node}.log")))?;
                let mut command = tokio::process::Command::new(&exe);
                command
                    .arg("serve")
                    .arg("--listen=127.0.0.1:0")
                    .arg("--data-dir")
                    .arg(data_dir.path().join(format!("data-{node}")))
                    .env("WRIT_OPERATOR_KEY", &key)
                    .env("WRIT_MASTER_KEY", &master)
                    .env("WRIT_CHECKPOINT_KEY", &checkpoint)
                    .stderr(log);
                if let Some(url) = &args.store_url {
                    command.arg("--store").arg(url);
                }
                let gateway = Spawned::start(command).await?;
                say(&format!(
                    "started a gateway on {} (pid {:?}){}",
                    gateway.addr,
                    gateway.pid(),
                    if args.store_url.is_some() {
                        ", PostgreSQL store"
                    } else {
                        ""
                    }
                ));
                started.push(gateway);
            }
            let first = started.remove(0);
            others = started;
            let (addr, pid) = (first.addr, first.pid());
            (Some(first), addr, key, pid)
        }
    };
    let mut addrs = vec![addr];
    addrs.extend(others.iter().map(|g| g.addr));
    let base = format!("http://{addr}");
    say(&format!(
        "setting up {} tenant(s), each with its own copy of {}",
        args.tenants,
        args.policy.display()
    ));
    config.metrics_key = Some(operator_key.clone());
    let tenants =
        bench::setup_tenants(&base, &operator_key, &policy, "bench", args.tenants).await?;
    for node in &addrs[1..] {
        for tenant in &tenants {
            bench::wait_until_serving(*node, &tenant.agent_key).await?;
        }
    }
    let rss_after_setup = pid.and_then(bench::rss_bytes);

    let held = if args.held > 0 {
        say(&format!("holding {} escalations open", args.held));
        let tenant = bench::setup_tenants(&base, &operator_key, &policy, "bench-held", 1).await?;
        Some(bench::hold_escalations(&base, addr, &tenant[0], args.held, pid).await?)
    } else {
        None
    };

    let floor = if args.no_floor {
        None
    } else {
        let mut command = tokio::process::Command::new(&exe);
        command.arg("bench-floor");
        Some(Spawned::start(command).await?)
    };
    let keys: Vec<String> = tenants.iter().map(|t| t.agent_key.clone()).collect();
    if let Some(flood_policy) = &args.flood_policy {
        return noisy_neighbour(
            &args,
            flood_policy,
            &base,
            addr,
            &operator_key,
            pid,
            &keys,
            &config,
        )
        .await;
    }
    let floor_keys = ["floor".to_owned()];
    let mut reports = Vec::new();
    for round in 1..=args.rounds {
        let of = if args.rounds > 1 {
            format!(" (round {round} of {})", args.rounds)
        } else {
            String::new()
        };
        if let Some(floor) = &floor {
            say(&format!("loading the floor on {}{of}", floor.addr));
            let mut report =
                bench::run_load("floor", floor.addr, &floor_keys, floor.pid(), &config).await?;
            report.round = round;
            reports.push(report);
        }
        say(&format!("loading the gateway on {addr}{of}"));
        let mut report = bench::run_load_spread("writ", &addrs, &keys, pid, &config).await?;
        report.round = round;
        reports.push(report);
    }
    let rss_after_load = pid.and_then(bench::rss_bytes);

    let mib = |b: Option<u64>| {
        b.map_or("n/a".to_owned(), |b| {
            format!("{:.1} MiB", b as f64 / 1048576.0)
        })
    };
    let mut table = bench::table(&reports);
    table += &format!(
        "gateway RSS: {} after setting up {} tenant(s), {} after the load\n",
        mib(rss_after_setup),
        args.tenants,
        mib(rss_after_load)
    );
    if let Some(h) = &held {
        table += &format!(
            "held escalations: {} held, RSS {} idle, {} held ({} answered BLOCK after rejection)\n",
            h.held,
            mib(h.rss_idle_bytes),
            mib(h.rss_held_bytes),
            h.answered
        );
    }
    let ratios = bench::ratios(&reports);
    let report = json!({
        "machine": {"cpus": std::thread::available_parallelism().map_or(0, |n| n.get())},
        "config": config,
        "tenants": args.tenants,
        "policy": args.policy.display().to_string(),
        "runs": reports,
        "writ_over_floor_percent": {
            "median": bench::median(&ratios),
            "by_round": ratios,
        },
        "gateway_rss_bytes": {"after_setup": rss_after_setup, "after_load": rss_after_load},
        "held": held,
    });
    write_report(&table, &report, args.json.as_deref())
}

/// `writ bench --flood-policy`: each round, the bench tenants' load alone, then beside a
/// flooding tenant; reports the neighbour's throughput and p99 both ways.
#[allow(clippy::too_many_arguments)]
async fn noisy_neighbour(
    args: &BenchArgs,
    flood_policy: &std::path::Path,
    base: &str,
    addr: std::net::SocketAddr,
    operator_key: &str,
    pid: Option<u32>,
    keys: &[String],
    config: &writ_bench::LoadConfig,
) -> anyhow::Result<ExitCode> {
    use writ_bench as bench;
    let say = |line: &str| eprintln!("writ bench: {line}");
    let policy = std::fs::read(flood_policy)
        .with_context(|| format!("reading {}", flood_policy.display()))?;
    let flood = bench::setup_tenants(base, operator_key, &policy, "flood", 1).await?;
    let limits = writ_client::wire::PatchTenantBody {
        eval_ms_per_s: Some(args.flood_eval_ms_per_s),
        max_evaluations: Some(args.flood_max_evaluations),
        // Its calls wait for their share rather than being refused and sent again at once.
        queue_ms: Some(10_000),
        max_queued: Some(args.flood_connections.max(1)),
        ..writ_client::wire::PatchTenantBody::default()
    };
    writ_client::Client::new(base, operator_key)?
        .patch_tenant(&flood[0].id, &limits)
        .await?;
    let mut reports = Vec::new();
    let mut floods = Vec::new();
    for round in 1..=args.rounds {
        say(&format!("round {round}: the neighbour alone"));
        let mut alone = bench::run_load("alone", addr, keys, pid, config).await?;
        alone.round = round;
        say(&format!(
            "round {round}: the neighbour beside {} flooding connections",
            args.flood_connections
        ));
        let running = bench::Flood::start(
            addr,
            &flood[0].agent_key,
            &args.flood_action,
            args.flood_connections,
        )?;
        let flooded = bench::run_load("flooded", addr, keys, pid, config).await;
        floods.push(running.stop().await);
        let mut flooded = flooded?;
        flooded.round = round;
        reports.push(alone);
        reports.push(flooded);
    }
    let kept: Vec<f64> = reports
        .chunks(2)
        .map(|pair| 100.0 * pair[1].requests_per_second / pair[0].requests_per_second.max(1e-9))
        .collect();
    let mut table = bench::table(&reports);
    table += &format!(
        "neighbour throughput kept under the flood: {} (median {:.1} %)\n",
        kept.iter()
            .map(|k| format!("{k:.1} %"))
            .collect::<Vec<_>>()
            .join(", "),
        bench::median(&kept).unwrap_or_default()
    );
    for (round, flood) in floods.iter().enumerate() {
        table += &format!(
            "round {}: flood answers by status {:?}\n",
            round + 1,
            flood.statuses
        );
    }
    let report = json!({
        "machine": {"cpus": std::thread::available_parallelism().map_or(0, |n| n.get())},
        "config": config,
        "flood": {
            "policy": flood_policy.display().to_string(),
            "action": args.flood_action,
            "connections": args.flood_connections,
            "eval_ms_per_s": args.flood_eval_ms_per_s,
            "max_evaluations": args.flood_max_evaluations,
            "answers": floods,
        },
        "runs": reports,
        "neighbour_kept_percent": {"median": bench::median(&kept), "by_round": kept},
    });
    write_report(&table, &report, args.json.as_deref())
}

/// Prints the table, and with `--json` the report: to a file, or (`-`) to standard output with
/// the table on standard error.
fn write_report(
    table: &str,
    report: &serde_json::Value,
    json: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    match json {
        Some(path) if path == std::path::Path::new("-") => {
            eprint!("{table}");
            println!("{}", serde_json::to_string_pretty(report)?);
        }
        Some(path) => {
            print!("{table}");
            std::fs::write(path, serde_json::to_string_pretty(report)?)?;
        }
        None => print!("{table}"),
    }
    Ok(ExitCode::SUCCESS)
}
