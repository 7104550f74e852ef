//! `hostile`: a policy that misbehaves in the way its call's action names, so that the tests can
//! check the sandbox stops each misbehaviour and blocks the call.
//!
//! | action | what it does |
//! | --- | --- |
//! | `spin` | loops forever |
//! | `burn` | counts to the argument `iterations`, then allows |
//! | `grow` | allocates memory until it is refused |
//! | `recurse` | recurses without end |
//! | `panic` | panics with the message `hostile panic` |
//! | `huge-reason` | allows with a 1 MiB reason |
//! | `many-codes` | allows with 1,000 codes |
//! | `bad-code` | allows with a code holding a space |
//! | `nan-charge`, `negative-charge`, `infinite-charge` | allows with such a charge |
//! | `print` | writes a line to standard output and one to standard error (WASI) |
//! | `env` | allows with the environment variables and arguments it sees (WASI) |
//! | `clock` | allows with the system clock's time (WASI) |
//! | `random` | allows with a hash seeded by `HashMap`'s random keys (WASI) |
//! | `sleep` | sleeps a minute, then allows with how long the monotonic clock says it took |
//! | `file` | reads `/etc/passwd`: allows if it could, blocks `no_files` if not |
//! | `exit` | exits the process (WASI) |
//! | `count` | increments a static counter and allows, with the count as reason |
//! | `echo-target` | allows, with the call's target (`service method url destructive`) as reason |
//! | `usage-flood` | reads 10,000 distinct usage counters |
//! | `log-flood` | writes 10,000 log lines |
//! | anything else | allows |

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

static CALLS: AtomicU64 = AtomicU64::new(0);

use writ_policy::{Decision, Level, Policy, ToolCall, Window};

/// Misbehaves on request.
pub struct Hostile;

fn recurse(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX {
        return 0;
    }
    black_box(recurse(depth + 1)) + 1
}

impl Policy for Hostile {
    fn evaluate(call: &ToolCall) -> Decision {
        match call.action() {
            "spin" => {
                let mut i: u64 = 0;
                loop {
                    i = black_box(i.wrapping_add(1));
                }
            }
            "burn" => {
                let n: u64 = call.arg("iterations").unwrap_or(0);
                let mut i: u64 = 0;
                while black_box(i) < n {
                    i = black_box(i + 1);
                }
                Decision::allow(format!("counted to {i}"))
            }
            "grow" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(Vec::<u8>::with_capacity(1 << 20)));
                }
            }
            "recurse" => Decision::allow(format!("{}", recurse(0))),
            "panic" => panic!("hostile panic"),
            "huge-reason" => Decision::allow("x".repeat(1 << 20)),
            "many-codes" => {
                (0..1000).fold(Decision::allow("codes"), |d, i| d.code(format!("c{i}")))
            }
            "bad-code" => Decision::allow("bad code").code("not a code"),
            "nan-charge" => Decision::allow("nan").charge("spend", f64::NAN),
            "negative-charge" => Decision::allow("negative").charge("spend", -1.0),
            "infinite-charge" => Decision::allow("infinite").charge("spend", f64::INFINITY),
            "print" => {
                println!("hello from a policy");
                eprintln!("and from its stderr");
                Decision::allow("printed")
            }
            "env" => Decision::allow(format!(
                "{:?} {:?}",
                std::env::vars().collect::<Vec<_>>(),
                std::env::args().collect::<Vec<_>>()
            )),
            "clock" => Decision::allow(format!(
                "{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis())
            )),
            "random" => {
                use std::hash::BuildHasher;
                let hash = std::collections::hash_map::RandomState::new().hash_one(1u8);
                Decision::allow(format!("{hash}"))
            }
            "sleep" => {
                let started = std::time::Instant::now();
                std::thread::sleep(std::time::Duration::from_secs(60));
                Decision::allow(format!("{:?}", started.elapsed()))
            }
            "file" => match std::fs::read("/etc/passwd") {
                Ok(_) => Decision::allow("opened"),
                Err(e) => Decision::block(format!("{e}")).code("no_files"),
            },
            "exit" => std::process::exit(3),
            "echo-target" => Decision::allow(match call.target() {
                Some(t) => format!("{} {} {} {}", t.service, t.method, t.url, t.destructive),
                None => "no target".into(),
            }),
            "count" => Decision::allow(format!("{}", CALLS.fetch_add(1, Ordering::Relaxed) + 1)),
            "usage-flood" => {
                let total: f64 = (0..10_000)
                    .map(|i| call.usage(&format!("c{i}"), Window::Day))
                    .sum();
                Decision::allow(format!("{total}"))
            }
            "log-flood" => {
                for i in 0..10_000 {
                    writ_policy::log(Level::Info, &format!("line {i}"));
                }
                Decision::allow("logged")
            }
            _ => Decision::allow("well behaved"),
        }
    }
}

writ_policy::export_policy!(Hostile);
