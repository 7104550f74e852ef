//! What a run measured ([`Report`]) and its rendering as a table and ratios.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{AuditWindow, CallKind};

/// Latency percentiles of a run, microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Slowest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `floor` or `writ`.
    pub target: String,
    /// Which round of a multi-round run (from 1); each round loads the floor, then the gateway.
    pub round: usize,
    /// Concurrent connections.
    pub connections: usize,
    /// Measured requests answered or failed.
    pub requests: u64,
    /// Failed requests: transport errors and non-2xx answers.
    pub errors: u64,
    /// Measured wall time, seconds.
    pub seconds: f64,
    /// `requests / seconds`.
    pub requests_per_second: f64,
    /// Latency of every measured request (answered or not), microseconds.
    pub latency_us: Latency,
    /// Answers by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// 2xx answers by `decision`.
    pub decisions: BTreeMap<String, u64>,
    /// Requests sent by kind.
    pub sent: BTreeMap<CallKind, u64>,
    /// CPU time (user + system, all threads) the target's process spent per measured request,
    /// microseconds, when its process id is known (Linux).
    pub server_cpu_us_per_request: Option<f64>,
    /// CPU time the load generator (this process) spent per measured request, microseconds.
    pub client_cpu_us_per_request: Option<f64>,
    /// Share of the machine's CPU time that went unused (idle or waiting on I/O) in the
    /// measured window, percent (Linux). With the generator and the target sharing the cores,
    /// time left here is time neither had work to run: e.g. every connection waiting on a disk.
    pub machine_idle_percent: Option<f64>,
    /// The gateway's durable audit over the measured window (a gateway only: the floor has
    /// none), from its `/metrics` read when the window opened and when it closed.
    pub audit: Option<AuditWindow>,
}

/// The reports as a table: one row per run, then Writ as a share of the floor. `cpu µs/req` is
/// the target's CPU per request, `gen µs/req` the load generator's: on shared cores both come
/// out of the same machine, so the generator's cost per request is part of each target's.
pub fn table(reports: &[Report]) -> String {
    let rounds = reports.iter().map(|r| r.round).max().unwrap_or(1);
    let mut out = format!(
        "{:<6} {:>5} {:>5} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9} {:>11} {:>11} {:>7}\n",
        "target",
        "round",
        "conns",
        "requests",
        "errors",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "cpu µs/req",
        "gen µs/req",
        "idle %"
    );
    let ms = |us: u64| us as f64 / 1000.0;
    let one_decimal = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.1}"));
    for r in reports {
        out += &format!(
            "{:<6} {:>5} {:>5} {:>9} {:>7} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>11} {:>11} {:>7}\n",
            r.target,
            r.round,
            r.connections,
            r.requests,
            r.errors,
            r.requests_per_second,
            ms(r.latency_us.p50),
            ms(r.latency_us.p90),
            ms(r.latency_us.p99),
            ms(r.latency_us.max),
            one_decimal(r.server_cpu_us_per_request),
            one_decimal(r.client_cpu_us_per_request),
            one_decimal(r.machine_idle_percent),
        );
    }
    let ratios = ratios(reports);
    if let Some(median) = median(&ratios) {
        if rounds == 1 {
            out += &format!("writ / floor: {median:.1}% of the floor's requests/s\n");
        } else {
            let each: Vec<String> = ratios.iter().map(|r| format!("{r:.1}%")).collect();
            out += &format!(
                "writ / floor: median {median:.1}% of the floor's requests/s over {} rounds ({})\n",
                ratios.len(),
                each.join(", ")
            );
        }
    }
    let mut decisions: BTreeMap<&str, BTreeMap<String, u64>> = BTreeMap::new();
    for r in reports {
        merge(
            decisions.entry(r.target.as_str()).or_default(),
            r.decisions.clone(),
        );
    }
    for (target, counts) in decisions.iter().filter(|(_, c)| !c.is_empty()) {
        out += &format!("{target} decisions: {counts:?}\n");
    }
    let bound = |us: Option<f64>| {
        us.map_or("beyond the histogram".to_owned(), |us| {
            format!("≤ {us:.0} µs")
        })
    };
    for r in reports {
        if let Some(a) = &r.audit {
            out += &format!(
                "{} round {} audit: {} batches of {:.1} records ({:.0}% single), flush p50 {}, p99 {}, flushing {:.0}% of the window\n",
                r.target,
                r.round,
                a.batches,
                a.records as f64 / a.batches as f64,
                a.single_record_percent,
                bound(a.flush_p50_us),
                bound(a.flush_p99_us),
                a.flushing_percent,
            );
        }
    }
    out
}

/// Writ's requests/s as a percentage of the floor's, for each round that loaded both (in
/// round order).
pub fn ratios(reports: &[Report]) -> Vec<f64> {
    let of = |target: &str, round: usize| {
        reports
            .iter()
            .find(|r| r.target == target && r.round == round)
    };
    let rounds = reports.iter().map(|r| r.round).max().unwrap_or(0);
    (1..=rounds)
        .filter_map(|round| match (of("floor", round), of("writ", round)) {
            (Some(floor), Some(writ)) if floor.requests_per_second > 0.0 => {
                Some(100.0 * writ.requests_per_second / floor.requests_per_second)
            }
            _ => None,
        })
        .collect()
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

pub(crate) fn merge<K: Ord>(into: &mut BTreeMap<K, u64>, from: BTreeMap<K, u64>) {
    for (k, v) in from {
        *into.entry(k).or_default() += v;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn report(target: &str, round: usize, requests_per_second: f64) -> Report {
        Report {
            target: target.into(),
            round,
            connections: 1,
            requests: 1,
            errors: 0,
            seconds: 1.0,
            requests_per_second,
            latency_us: Latency {
                p50: 1,
                p90: 1,
                p99: 1,
                max: 1,
                mean: 1.0,
            },
            statuses: BTreeMap::new(),
            decisions: BTreeMap::from([("ALLOW".to_owned(), 1)]),
            sent: BTreeMap::new(),
            server_cpu_us_per_request: None,
            client_cpu_us_per_request: None,
            machine_idle_percent: None,
            audit: None,
        }
    }

    #[test]
    fn ratios_pair_each_round_and_the_median_is_reported() {
        let reports = [
            report("floor", 1, 100.0),
            report("writ", 1, 30.0),
            report("floor", 2, 80.0),
            report("writ", 2, 20.0),
            report("floor", 3, 50.0),
            report("writ", 3, 20.0),
        ];
        assert_eq!(ratios(&reports), [30.0, 25.0, 40.0]);
        assert_eq!(median(&ratios(&reports)), Some(30.0));
        assert_eq!(median(&[25.0, 40.0]), Some(32.5));
        assert_eq!(median(&[]), None);
        // A round without the floor (`--no-floor`) has no ratio.
        assert!(ratios(&[report("writ", 1, 30.0)]).is_empty());

        let table = table(&reports);
        assert!(
            table.contains(
                "median 30.0% of the floor's requests/s over 3 rounds (30.0%, 25.0%, 40.0%)"
            ),
            "{table}"
        );
        // Decisions are summed over the rounds.
        assert!(table.contains("writ decisions: {\"ALLOW\": 3}"), "{table}");
        let one = super::table(&reports[..2]);
        assert!(
            one.contains("writ / floor: 30.0% of the floor's requests/s"),
            "{one}"
        );
    }

    #[test]
    fn the_table_gives_the_target_and_the_generator_cpu_per_request() {
        let mut writ = report("writ", 1, 30.0);
        writ.server_cpu_us_per_request = Some(130.26);
        writ.client_cpu_us_per_request = Some(35.5);
        let table = table(&[report("floor", 1, 100.0), writ]);
        let lines: Vec<&str> = table.lines().collect();
        let columns = |line: &str| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let header = columns(lines[0]);
        let at = |name: &str| header.iter().position(|h| h == name).expect(name);
        // "cpu µs/req" and "gen µs/req" are two words each in the header.
        assert_eq!(
            &header[at("cpu")..at("cpu") + 4],
            ["cpu", "µs/req", "gen", "µs/req"]
        );
        let floor = columns(lines[1]);
        let writ = columns(lines[2]);
        let n = floor.len();
        assert_eq!(&floor[n - 3..], ["n/a", "n/a", "n/a"], "{table}");
        assert_eq!(&writ[n - 3..], ["130.3", "35.5", "n/a"], "{table}");
    }
}
