//! The gateway's durable audit over a measured window, read from its `/metrics` histograms.

use std::net::SocketAddr;

use serde::Serialize;

use crate::loopback::loopback_client;

/// What the gateway's audit writer did in a measured window: its batches (group commits), each
/// one transaction and one durable flush, which every request in the batch waits on before it
/// is answered. From the writer's histograms in `/metrics`, so the flush times are bounds: the
/// upper edge of the bucket the percentile falls in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditWindow {
    /// Batches written.
    pub batches: u64,
    /// Records written in them.
    pub records: u64,
    /// Share of the batches that held a single record, percent.
    pub single_record_percent: f64,
    /// The median flush took at most this long, microseconds (`None`: beyond the histogram).
    pub flush_p50_us: Option<f64>,
    /// The 99th-percentile flush took at most this long, microseconds.
    pub flush_p99_us: Option<f64>,
    /// Time spent in flushes as a share of the window, percent. The writer flushes one batch
    /// at a time, so this is how much of the window some batch was waiting on the disk.
    pub flushing_percent: f64,
}

impl AuditWindow {
    /// The window between two `/metrics` texts of the same gateway, `seconds` long; `None` if
    /// either lacks the writer's histograms or nothing was written.
    pub fn between(start: &str, end: &str, seconds: f64) -> Option<Self> {
        let histogram = |name| -> Option<Scraped> {
            Scraped::parse(end, name)?.since(&Scraped::parse(start, name)?)
        };
        let (batch, flush) = (
            histogram("writ_audit_batch_records")?,
            histogram("writ_audit_flush_seconds")?,
        );
        if batch.count == 0 || seconds <= 0.0 {
            return None;
        }
        let single = batch.buckets.first().filter(|(le, _)| *le == 1.0)?.1;
        let micros = |q| {
            flush
                .upper_bound(q)
                .filter(|s| s.is_finite())
                .map(|s| s * 1e6)
        };
        Some(Self {
            batches: batch.count,
            records: batch.sum.round() as u64,
            single_record_percent: 100.0 * single as f64 / batch.count as f64,
            flush_p50_us: micros(0.50),
            flush_p99_us: micros(0.99),
            flushing_percent: 100.0 * flush.sum / seconds,
        })
    }
}

/// One histogram of an OpenMetrics text: cumulative counts by bucket upper bound, sum, count.
#[derive(Debug, Default, PartialEq)]
struct Scraped {
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

impl Scraped {
    /// The histogram `name` in `text`, if it has one (and it parses).
    fn parse(text: &str, name: &str) -> Option<Self> {
        let mut histogram = Self::default();
        let mut found = false;
        for line in text.lines() {
            let Some((series, value)) = line.strip_prefix(name).and_then(|l| l.rsplit_once(' '))
            else {
                continue;
            };
            match series {
                "_sum" => histogram.sum = value.parse().ok()?,
                "_count" => histogram.count = value.parse().ok()?,
                _ => match series
                    .strip_prefix("_bucket{le=\"")
                    .and_then(|s| s.strip_suffix("\"}"))
                {
                    Some("+Inf") => histogram.buckets.push((f64::INFINITY, value.parse().ok()?)),
                    Some(le) => histogram
                        .buckets
                        .push((le.parse().ok()?, value.parse().ok()?)),
                    None => continue,
                },
            }
            found = true;
        }
        found.then_some(histogram)
    }

    /// What was added since `earlier` (the same histogram, read before); `None` if the
    /// buckets differ or a count went down (another process, or a restart).
    fn since(&self, earlier: &Self) -> Option<Self> {
        if self.buckets.len() != earlier.buckets.len() {
            return None;
        }
        let buckets = self
            .buckets
            .iter()
            .zip(&earlier.buckets)
            .map(|(&(le, now), &(was_le, then))| {
                (le == was_le).then_some((le, now.checked_sub(then)?))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            buckets,
            sum: self.sum - earlier.sum,
            count: self.count.checked_sub(earlier.count)?,
        })
    }

    /// The upper bound of the bucket the `q` quantile falls in.
    fn upper_bound(&self, q: f64) -> Option<f64> {
        let rank = ((q * self.count as f64).ceil() as u64).max(1);
        self.buckets
            .iter()
            .find(|(_, cumulative)| *cumulative >= rank)
            .map(|(le, _)| *le)
    }
}

/// The `/metrics` text of the gateway at `addr`, read with the operator `key`, if it serves
/// one.
pub(crate) async fn scrape_metrics(addr: SocketAddr, key: Option<&str>) -> Option<String> {
    let mut request = loopback_client()
        .ok()?
        .get(format!("http://{addr}/metrics"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.text().await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::report;
    use crate::table;

    #[test]
    fn audit_window_is_read_from_the_writer_histograms() {
        let metrics = writ_gateway::metrics::Metrics::default();
        let writer = &metrics.audit_writer;
        let batch = |records: f64, flush_s: f64| {
            writer.batch_records.observe(records);
            writer.flush_seconds.observe(flush_s);
        };
        batch(5.0, 1e-4); // before the window
        let start = metrics.render();
        for (records, flush_s) in [(1.0, 50e-6), (1.0, 100e-6), (10.0, 300e-6), (40.0, 2e-3)] {
            batch(records, flush_s);
        }
        let end = metrics.render();

        let window = AuditWindow::between(&start, &end, 0.0049).expect("a window");
        assert_eq!((window.batches, window.records), (4, 52));
        assert_eq!(window.single_record_percent, 50.0);
        // Bounds are the buckets' upper edges (10 µs doubling): 100 µs is in the 160 µs bucket,
        // 2 ms in the 2.56 ms one.
        let close = |got: Option<f64>, want: f64| got.is_some_and(|g| (g - want).abs() < 1e-6);
        assert!(close(window.flush_p50_us, 160.0), "{window:?}");
        assert!(close(window.flush_p99_us, 2560.0), "{window:?}");
        assert!((window.flushing_percent - 50.0).abs() < 1e-9);
        let mut writ = report("writ", 1, 30.0);
        writ.audit = Some(window);
        let table = table(&[report("floor", 1, 100.0), writ]);
        assert!(
            table.contains(
                "writ round 1 audit: 4 batches of 13.0 records (50% single), \
                 flush p50 ≤ 160 µs, p99 ≤ 2560 µs, flushing 50% of the window"
            ),
            "{table}"
        );

        // Nothing written in the window, a target without the writer's histograms (the
        // floor), and counts that went down (another process) give no window.
        assert_eq!(AuditWindow::between(&end, &end, 1.0), None);
        assert_eq!(AuditWindow::between("", &end, 1.0), None);
        assert_eq!(AuditWindow::between(&end, &start, 1.0), None);
    }
}
