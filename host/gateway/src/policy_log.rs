//! Policies' log lines into the gateway's log: each line one structured event, its message
//! escaped so a policy cannot forge lines or terminal escapes, and rate-limited per tenant by a
//! token bucket so one tenant's chatty policy can neither flood the log nor spend another
//! tenant's share. Lines over the limit are counted and reported in one summary warning per
//! tenant at most every [`SUMMARY_EVERY`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use writ_runtime::evaluation::{LogLevel, LogLine};

/// Lines per second a tenant's policies may log by default.
pub const DEFAULT_LINES_PER_S: f64 = 50.0;
/// Lines a tenant may log at once after being quiet, by default.
pub const DEFAULT_BURST: f64 = 200.0;
/// At most one summary of dropped lines per tenant this often.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);
/// Buckets kept before idle, full ones are forgotten (a forgotten tenant starts full again,
/// which is where it was).
const MAX_TRACKED: usize = 10_000;

/// Emits policies' log lines: see the module documentation.
#[derive(Debug)]
pub struct PolicyLog {
    lines_per_s: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
    /// Lines refused by the bucket since the last summary.
    rate_limited: u64,
    /// Lines the runtime dropped past its per-call cap since the last summary.
    over_cap: u64,
    last_summary: Option<Instant>,
}

/// What [`PolicyLog::admit`] decided for one evaluation's lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// How many of the lines (the first ones) to emit.
    pub lines: usize,
    /// A summary to emit now: lines dropped since the last one.
    pub summary: Option<Dropped>,
}

/// Lines dropped since the last summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// Refused by the tenant's rate limit.
    pub rate_limited: u64,
    /// Dropped by the runtime past its lines-per-call cap.
    pub over_cap: u64,
}

impl Default for PolicyLog {
    fn default() -> Self {
        Self::new(DEFAULT_LINES_PER_S, DEFAULT_BURST)
    }
}

impl PolicyLog {
    /// A log admitting `lines_per_s` lines a second per tenant, up to `burst` at once.
    pub fn new(lines_per_s: f64, burst: f64) -> Self {
        Self {
            lines_per_s: lines_per_s.max(0.0),
            burst: burst.max(0.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Emits an evaluation's `logs` for `tenant` and `policy` as `tracing` events (target
    /// `writ_gateway::policy_log`, at the line's level, with fields `tenant`, `policy` and the
    /// escaped `message`), as many as the tenant's bucket admits. `dropped` is the number of
    /// lines the runtime dropped past its per-call cap (`Evaluation::logs_dropped`); they and
    /// the refused lines are reported in the tenant's next summary warning.
    pub fn emit(&self, tenant: &str, policy: &str, logs: &[LogLine], dropped: usize) {
        // Most evaluations log nothing: they cost no clock read or lock here.
        if logs.is_empty() && dropped == 0 {
            return;
        }
        self.emit_at(Instant::now(), tenant, policy, logs, dropped);
    }

    /// [`Self::emit`] at `now`.
    pub fn emit_at(
        &self,
        now: Instant,
        tenant: &str,
        policy: &str,
        logs: &[LogLine],
        dropped: usize,
    ) {
        // Lines no subscriber would record cost nothing.
        let wanted = logs.iter().filter(|l| enabled(l.level));
        let admission = self.admit(now, tenant, wanted.clone().count(), dropped);
        for line in wanted.take(admission.lines) {
            let message = Escaped(&line.message);
            match line.level {
                LogLevel::Debug => tracing::debug!(tenant, policy, %message),
                LogLevel::Info => tracing::info!(tenant, policy, %message),
                LogLevel::Warn => tracing::warn!(tenant, policy, %message),
                LogLevel::Error => tracing::error!(tenant, policy, %message),
            }
        }
        if let Some(Dropped {
            rate_limited,
            over_cap,
        }) = admission.summary
        {
            tracing::warn!(
                tenant,
                rate_limited,
                over_cap,
                "policy log lines dropped (over the tenant's rate limit, or past the lines kept \
                 per call)"
            );
        }
    }

    /// Takes up to `lines` tokens from `tenant`'s bucket at `now`, counts `dropped` lines and
    /// the lines refused, and says whether a summary of the dropped lines is due.
    pub fn admit(&self, now: Instant, tenant: &str, lines: usize, dropped: usize) -> Admission {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(tenant) {
            if buckets.len() >= MAX_TRACKED {
                self.forget_idle(&mut buckets, now);
            }
            buckets.insert(
                tenant.to_owned(),
                Bucket {
                    tokens: self.burst,
                    refilled: now,
                    rate_limited: 0,
                    over_cap: 0,
                    last_summary: None,
                },
            );
        }
        let bucket = buckets.get_mut(tenant).expect("inserted above");
        self.refill(bucket, now);
        let admitted = (bucket.tokens.floor() as usize).min(lines);
        bucket.tokens -= admitted as f64;
        bucket.rate_limited += (lines - admitted) as u64;
        bucket.over_cap += dropped as u64;
        let pending = bucket.rate_limited + bucket.over_cap > 0;
        let due = bucket
            .last_summary
            .is_none_or(|last| now.saturating_duration_since(last) >= SUMMARY_EVERY);
        let summary = (pending && due).then(|| {
            bucket.last_summary = Some(now);
            Dropped {
                rate_limited: std::mem::take(&mut bucket.rate_limited),
                over_cap: std::mem::take(&mut bucket.over_cap),
            }
        });
        Admission {
            lines: admitted,
            summary,
        }
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.refilled);
        bucket.tokens = (bucket.tokens + elapsed.as_secs_f64() * self.lines_per_s).min(self.burst);
        bucket.refilled = bucket.refilled.max(now);
    }

    /// Forgets the buckets that are full again with nothing left to report.
    fn forget_idle(&self, buckets: &mut HashMap<String, Bucket>, now: Instant) {
        buckets.retain(|_, bucket| {
            self.refill(bucket, now);
            bucket.tokens < self.burst || bucket.rate_limited + bucket.over_cap > 0
        });
    }
}

fn enabled(level: LogLevel) -> bool {
    match level {
        LogLevel::Debug => tracing::enabled!(tracing::Level::DEBUG),
        LogLevel::Info => tracing::enabled!(tracing::Level::INFO),
        LogLevel::Warn => tracing::enabled!(tracing::Level::WARN),
        LogLevel::Error => tracing::enabled!(tracing::Level::ERROR),
    }
}

/// A policy's message with control characters (newlines, carriage returns, terminal escapes)
/// and backslashes escaped as Rust escapes, so it stays one line of the log and says nothing
/// to the terminal.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write as _;
        for c in self.0.chars() {
            if c == '\\' || c.is_control() || is_line_separator(c) {
                for e in c.escape_default() {
                    f.write_char(e)?;
                }
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// Characters some viewers break lines at although they are not control characters.
fn is_line_separator(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}' | '\u{85}')
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn line(level: LogLevel, message: &str) -> LogLine {
        LogLine {
            level,
            message: message.to_owned(),
        }
    }

    #[test]
    fn a_tenant_gets_its_burst_then_its_rate() {
        let log = PolicyLog::new(50.0, 200.0);
        let t0 = Instant::now();
        assert_eq!(log.admit(t0, "a", 150, 0).lines, 150);
        assert_eq!(log.admit(t0, "a", 150, 0).lines, 50);
        assert_eq!(log.admit(t0, "a", 10, 0).lines, 0);
        // 100 ms later: 5 more tokens.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(log.admit(t1, "a", 10, 0).lines, 5);
        // Never more than the burst, however long it was quiet.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!(log.admit(t2, "a", 1000, 0).lines, 200);
    }

    #[test]
    fn one_tenants_flood_does_not_spend_another_tenants_budget() {
        let log = PolicyLog::new(50.0, 200.0);
        let t0 = Instant::now();
        for i in 0..100 {
            log.admit(t0 + Duration::from_millis(i), "noisy", 64, 0);
        }
        // Its 100 ms earned it 5 lines, all spent on the way.
        let later = t0 + Duration::from_millis(100);
        assert!(log.admit(later, "noisy", 64, 0).lines <= 1);
        assert_eq!(log.admit(later, "quiet", 64, 0).lines, 64);
        assert_eq!(log.admit(later, "quiet", 200, 0).lines, 136);
    }

    #[test]
    fn dropped_lines_are_summarised_once_per_interval_per_tenant() {
        let log = PolicyLog::new(1.0, 2.0);
        let t0 = Instant::now();
        // Nothing dropped: no summary.
        assert_eq!(log.admit(t0, "a", 1, 0).summary, None);
        // The first drop is reported at once, with the runtime's count too.
        let first = log.admit(t0, "a", 5, 3);
        assert_eq!(first.lines, 1);
        assert_eq!(
            first.summary,
            Some(Dropped {
                rate_limited: 4,
                over_cap: 3
            })
        );
        // Further drops within the interval accumulate silently...
        for i in 1..=5 {
            let a = log.admit(t0 + Duration::from_millis(i), "a", 10, 1);
            assert_eq!(a.summary, None);
        }
        // ...another tenant's summary is its own...
        assert!(log.admit(t0, "b", 10, 0).summary.is_some());
        // ...and come out together once the interval has passed.
        let later = log.admit(t0 + SUMMARY_EVERY, "a", 0, 0);
        assert_eq!(
            later.summary,
            Some(Dropped {
                rate_limited: 50,
                over_cap: 5
            })
        );
        assert_eq!(log.admit(t0 + SUMMARY_EVERY * 3, "a", 0, 0).summary, None);
    }

    #[test]
    fn escaping_keeps_a_message_on_one_line_and_away_from_the_terminal() {
        let forged = "ok\n2026-01-01T00:00:00Z ERROR writ_gateway: forged\r\x1b[31mred\\n\u{2028}x";
        let escaped = Escaped(forged).to_string();
        assert_eq!(
            escaped,
            "ok\\n2026-01-01T00:00:00Z ERROR writ_gateway: forged\\r\\u{1b}[31mred\\\\n\\u{2028}x"
        );
        assert!(!escaped.chars().any(|c| c.is_control()));
        // Printable text, quotes and non-ASCII letters are left alone.
        assert_eq!(
            Escaped("naïve \"quote\" 'x'").to_string(),
            "naïve \"quote\" 'x'"
        );
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `f` logs, formatted as `writ serve` formats it (text, or JSON with `json`).
    fn capture(json: bool, f: impl FnOnce()) -> String {
        let out = Captured::default();
        let writer = {
            let out = out.clone();
            move || out.clone()
        };
        let builder = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(writer);
        if json {
            tracing::subscriber::with_default(builder.json().finish(), f);
        } else {
            tracing::subscriber::with_default(builder.finish(), f);
        }
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn each_policy_line_is_one_log_line_with_tenant_and_policy() {
        let log = PolicyLog::new(50.0, 200.0);
        let logs = [
            line(LogLevel::Info, "fine"),
            line(LogLevel::Error, "evil\nERROR forged line\r\n\x1b[2J"),
        ];
        let text = capture(false, || log.emit("acme", "pol-1", &logs, 0));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].contains("INFO"), "{text}");
        assert!(lines[0].contains("fine"), "{text}");
        assert!(lines[1].contains("ERROR"), "{text}");
        assert!(
            lines[1].contains("evil\\nERROR forged line\\r\\n\\u{1b}[2J"),
            "{text}"
        );
        assert!(
            lines.iter().all(|l| l.contains("tenant=\"acme\"")),
            "{text}"
        );
        assert!(
            lines.iter().all(|l| l.contains("policy=\"pol-1\"")),
            "{text}"
        );

        let json = capture(true, || log.emit("acme", "pol-1", &logs, 0));
        let events: Vec<serde_json::Value> = json
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events.len(), 2, "{json}");
        assert_eq!(events[1]["level"], "ERROR");
        assert_eq!(events[1]["fields"]["tenant"], "acme");
        assert_eq!(events[1]["fields"]["policy"], "pol-1");
        assert_eq!(
            events[1]["fields"]["message"],
            "evil\\nERROR forged line\\r\\n\\u{1b}[2J"
        );
    }

    #[test]
    fn a_flood_is_cut_to_the_burst_and_summarised() {
        let log = PolicyLog::new(50.0, 200.0);
        let logs: Vec<LogLine> = (0..64)
            .map(|i| line(LogLevel::Info, &format!("line {i}")))
            .collect();
        let now = Instant::now();
        let text = capture(false, || {
            for _ in 0..4 {
                log.emit_at(now, "noisy", "p", &logs, 10);
            }
        });
        let policy_lines = text.lines().filter(|l| l.contains("line ")).count();
        assert_eq!(policy_lines, 200, "{text}");
        let summaries: Vec<&str> = text.lines().filter(|l| l.contains("dropped")).collect();
        assert_eq!(summaries.len(), 1, "{text}");
        assert!(summaries[0].contains("WARN"), "{text}");
        // The first call dropped 10 past the cap and was summarised at once; later calls'
        // drops wait for the next interval.
        assert!(summaries[0].contains("over_cap=10"), "{text}");
        assert!(summaries[0].contains("rate_limited=0"), "{text}");
    }

    #[test]
    fn lines_no_subscriber_records_cost_nothing() {
        let log = PolicyLog::new(50.0, 2.0);
        let now = Instant::now();
        let debug = vec![line(LogLevel::Debug, "d"); 10];
        let out = Captured::default();
        let writer = {
            let out = out.clone();
            move || out.clone()
        };
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(writer)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            log.emit_at(now, "t", "p", &debug, 0);
            log.emit_at(now, "t", "p", &[line(LogLevel::Info, "i")], 0);
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.trim_end().ends_with(" i"), "{text}");
    }
}
