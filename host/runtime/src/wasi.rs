//! The WASI a policy may import: deterministic, and reaching nothing.
//!
//! Language runtimes (CPython under `componentize-py`, SpiderMonkey under `componentize-js`,
//! Rust's std) import WASI and call some of it at run time. A policy must still decide the same
//! way every time it is given the same call, and must reach nothing outside its instance, so:
//!
//! - the wall clock answers the call's `timestamp-ms`, and the monotonic clock stands still at
//!   it: a sleep returns at once, a loop waiting for time to pass runs out of fuel or deadline;
//! - randomness (secure and insecure alike) is a stream derived from the call with blake3, so
//!   replaying a call replays its random numbers;
//! - no environment variables, no arguments, no working directory, stdin at its end;
//! - stdout and stderr go to the policy's log, as `host.log` lines (info and warn), capped;
//! - no preopened directories, so no file can be named; `exit` ends the evaluation (a BLOCK);
//! - `wasi:sockets` is linked only so that CPython's libc links: every function traps.
//!
//! The state is made the first time a policy calls a WASI function, so a policy that never
//! does (most Rust ones) costs nothing more per call.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdinStream, StdoutStream, WasiCli, WasiCliView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, io, random};
use wasmtime_wasi::p2::pipe::ClosedInputStream;
use wasmtime_wasi::p2::{
    DynPollable, InputStream, OutputStream, Pollable, StreamError, StreamResult, subscribe,
};
use wasmtime_wasi::random::WasiRandom;
use wasmtime_wasi::{HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::decision::ToolCall;
use crate::evaluation::{CallState, LogLevel, LogLine, MAX_LOG_LINE, MAX_LOG_LINES};

/// Bytes of stdout and stderr kept per evaluation (together); the rest is dropped.
const MAX_OUTPUT: usize = MAX_LOG_LINES * MAX_LOG_LINE;

/// What one call's WASI answers with: fixed before the policy runs.
pub(crate) struct CallWasi {
    timestamp_ms: u64,
    seed: [u8; 32],
    output: Arc<Mutex<Output>>,
    made: Option<Box<Made>>,
}

/// The WASI context and resource table, made on first use.
struct Made {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl CallWasi {
    /// The WASI for `call`: its clocks at the call's timestamp, its random stream seeded from
    /// the whole call (the same call replays the same stream).
    pub(crate) fn new(call: &ToolCall) -> Self {
        let mut hasher = blake3::Hasher::new_derive_key("writ policy random 2026-12-06");
        let target = call.target.as_ref();
        let parts: [&[u8]; 11] = [
            call.action.as_bytes(),
            call.arguments.as_bytes(),
            call.context.as_bytes(),
            call.agent_id.as_bytes(),
            call.key_id.as_bytes(),
            call.session_id.as_bytes(),
            call.tenant_id.as_bytes(),
            target.map_or(&b""[..], |t| t.service.as_bytes()),
            target.map_or(&b""[..], |t| t.method.as_bytes()),
            target.map_or(&b""[..], |t| t.url.as_bytes()),
            &call.timestamp_ms.to_le_bytes(),
        ];
        for part in parts {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        hasher.update(&[u8::from(target.is_some_and(|t| t.destructive))]);
        Self {
            timestamp_ms: call.timestamp_ms,
            seed: *hasher.finalize().as_bytes(),
            output: Arc::default(),
            made: None,
        }
    }

    fn made(&mut self) -> &mut Made {
        let (timestamp_ms, seed, output) = (self.timestamp_ms, self.seed, &self.output);
        self.made.get_or_insert_with(|| {
            let mut builder = WasiCtxBuilder::new();
            builder
                .wall_clock(CallClock(timestamp_ms))
                .secure_random(CallRandom::new(&seed, b"secure"))
                .insecure_random(CallRandom::new(&seed, b"insecure"))
                .insecure_random_seed(u128::from_le_bytes(seed[..16].try_into().unwrap()))
                .stdin(NoInput)
                .stdout(LogPipe {
                    output: output.clone(),
                    level: LogLevel::Info,
                })
                .stderr(LogPipe {
                    output: output.clone(),
                    level: LogLevel::Warn,
                })
                .allow_tcp(false)
                .allow_udp(false)
                .allow_ip_name_lookup(false);
            Box::new(Made {
                ctx: builder.build(),
                table: ResourceTable::new(),
            })
        })
    }

    /// The lines the policy wrote to stdout and stderr, and how many were dropped.
    pub(crate) fn take_output(&self) -> (Vec<LogLine>, usize) {
        let mut output = self.output.lock().unwrap_or_else(|e| e.into_inner());
        output.finish();
        (std::mem::take(&mut output.lines), output.dropped)
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        // Only a component that imports WASI reaches here, and its calls have their `CallWasi`.
        let wasi = self
            .wasi
            .get_or_insert_with(|| CallWasi::new(&ToolCall::default()));
        let made = wasi.made();
        WasiCtxView {
            ctx: &mut made.ctx,
            table: &mut made.table,
        }
    }
}

/// Adds the deterministic WASI interfaces to `linker` (sockets are stubbed per component, see
/// `Engine::link`).
pub(crate) fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    let l = linker;
    io::error::add_to_linker::<CallState, HasIo>(l, |t| t.ctx().table)?;
    io::poll::add_to_linker::<CallState, HasIo>(l, |t| t.ctx().table)?;
    io::streams::add_to_linker::<CallState, HasIo>(l, |t| t.ctx().table)?;
    clocks::wall_clock::add_to_linker::<CallState, WasiClocks>(l, CallState::clocks)?;
    clocks::monotonic_clock::add_to_linker::<CallState, StillClock>(l, |t| {
        let now_ns = t.wasi.as_ref().map_or(0, |w| w.timestamp_ms) * 1_000_000;
        StillClockView {
            now_ns,
            table: t.ctx().table,
        }
    })?;
    filesystem::preopens::add_to_linker::<CallState, WasiFilesystem>(l, CallState::filesystem)?;
    filesystem::types::add_to_linker::<CallState, WasiFilesystem>(l, CallState::filesystem)?;
    random::random::add_to_linker::<CallState, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    random::insecure::add_to_linker::<CallState, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    random::insecure_seed::add_to_linker::<CallState, WasiRandom>(l, |t| t.ctx().ctx.random())?;
    cli::exit::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::environment::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::stdin::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::stdout::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::stderr::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::terminal_input::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::terminal_output::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::terminal_stdin::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::terminal_stdout::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::terminal_stderr::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    Ok(())
}

/// The host resource types a stubbed interface may name through `use`: those of `wasi:io`
/// must be the types the real `wasi:io` defines, or the component does not type-check.
pub(crate) fn io_resource_type(name: &str) -> Option<wasmtime::component::ResourceType> {
    use wasmtime::component::ResourceType;
    Some(match name {
        "pollable" => ResourceType::host::<DynPollable>(),
        "input-stream" => ResourceType::host::<wasmtime_wasi::p2::DynInputStream>(),
        "output-stream" => ResourceType::host::<wasmtime_wasi::p2::DynOutputStream>(),
        "error" => ResourceType::host::<wasmtime_wasi::p2::IoError>(),
        _ => return None,
    })
}

struct HasIo;

impl HasData for HasIo {
    type Data<'a> = &'a mut ResourceTable;
}

/// The wall clock: the call's timestamp, whenever it is read.
struct CallClock(u64);

impl HostWallClock for CallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        Duration::from_millis(self.0)
    }
}

/// The monotonic clock, standing still at the call's timestamp; what waits on it is ready at
/// once.
struct StillClock;

struct StillClockView<'a> {
    now_ns: u64,
    table: &'a mut ResourceTable,
}

impl HasData for StillClock {
    type Data<'a> = StillClockView<'a>;
}

impl clocks::monotonic_clock::Host for StillClockView<'_> {
    fn now(&mut self) -> wasmtime::Result<u64> {
        Ok(self.now_ns)
    }

    fn resolution(&mut self) -> wasmtime::Result<u64> {
        Ok(1_000_000)
    }

    fn subscribe_instant(&mut self, _when: u64) -> wasmtime::Result<Resource<DynPollable>> {
        let ready = self.table.push(Ready)?;
        subscribe(self.table, ready)
    }

    fn subscribe_duration(&mut self, _duration: u64) -> wasmtime::Result<Resource<DynPollable>> {
        let ready = self.table.push(Ready)?;
        subscribe(self.table, ready)
    }
}

/// A pollable that is always ready.
struct Ready;

#[wasmtime_wasi::async_trait]
impl Pollable for Ready {
    async fn ready(&mut self) {}
}

/// A random stream: blake3's extendable output keyed by the call's seed.
struct CallRandom(blake3::OutputReader);

impl CallRandom {
    fn new(seed: &[u8; 32], purpose: &[u8]) -> Self {
        let mut hasher = blake3::Hasher::new_keyed(seed);
        hasher.update(purpose);
        Self(hasher.finalize_xof())
    }
}

impl rand_core::TryRng for CallRandom {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut bytes = [0; 4];
        self.0.fill(&mut bytes);
        Ok(u32::from_le_bytes(bytes))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut bytes = [0; 8];
        self.0.fill(&mut bytes);
        Ok(u64::from_le_bytes(bytes))
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Infallible> {
        self.0.fill(dest);
        Ok(())
    }
}

/// stdin: always at its end.
struct NoInput;

impl IsTerminal for NoInput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdinStream for NoInput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncRead + Send + Sync> {
        Box::new(tokio::io::empty())
    }

    fn p2_stream(&self) -> Box<dyn InputStream> {
        Box::new(ClosedInputStream)
    }
}

/// What the policy wrote to stdout and stderr: complete lines, and the line being written.
#[derive(Default)]
struct Output {
    lines: Vec<LogLine>,
    partial: Vec<(LogLevel, Vec<u8>)>,
    kept: usize,
    dropped: usize,
}

impl Output {
    fn write(&mut self, level: LogLevel, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let (line, rest, ended) = match bytes.iter().position(|&b| b == b'\n') {
                Some(at) => (&bytes[..at], &bytes[at + 1..], true),
                None => (bytes, &[][..], false),
            };
            let room = MAX_OUTPUT.saturating_sub(self.kept);
            let taken = &line[..line.len().min(room)];
            self.kept += taken.len();
            match self.partial.iter_mut().find(|(l, _)| *l == level) {
                Some((_, buffer)) => buffer.extend_from_slice(taken),
                None => self.partial.push((level, taken.to_vec())),
            }
            if ended {
                self.end_line(level);
            }
            bytes = rest;
        }
    }

    fn end_line(&mut self, level: LogLevel) {
        let Some(at) = self.partial.iter().position(|(l, _)| *l == level) else {
            return;
        };
        let (_, bytes) = self.partial.swap_remove(at);
        if self.lines.len() >= MAX_LOG_LINES {
            self.dropped += 1;
            return;
        }
        let mut message = String::from_utf8_lossy(&bytes).into_owned();
        if message.len() > MAX_LOG_LINE {
            let mut end = MAX_LOG_LINE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        self.lines.push(LogLine { level, message });
    }

    /// Ends the lines left without a newline.
    fn finish(&mut self) {
        for level in [LogLevel::Info, LogLevel::Warn] {
            if self
                .partial
                .iter()
                .any(|(l, b)| *l == level && !b.is_empty())
            {
                self.end_line(level);
            }
        }
        self.partial.clear();
    }
}

/// stdout or stderr: into the policy's log. Never refuses a write (a policy that prints too
/// much loses lines, not its decision).
#[derive(Clone)]
struct LogPipe {
    output: Arc<Mutex<Output>>,
    level: LogLevel,
}

impl IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogPipe {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(tokio::io::sink())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogPipe {
    async fn ready(&mut self) {}
}

impl OutputStream for LogPipe {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        let mut output = self.output.lock().map_err(|_| StreamError::Closed)?;
        output.write(self.level, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_lines_become_log_lines_and_a_flood_is_cut_not_refused() {
        let mut out = Output::default();
        out.write(LogLevel::Info, b"one\ntw");
        out.write(LogLevel::Warn, b"oops\n");
        out.write(LogLevel::Info, b"o\nthree");
        out.finish();
        let lines: Vec<_> = out.lines.iter().map(|l| (l.level, &*l.message)).collect();
        assert_eq!(
            lines,
            [
                (LogLevel::Info, "one"),
                (LogLevel::Warn, "oops"),
                (LogLevel::Info, "two"),
                (LogLevel::Info, "three")
            ]
        );

        let mut flood = Output::default();
        for _ in 0..10_000 {
            flood.write(LogLevel::Info, &[b'x'; 100]);
            flood.write(LogLevel::Info, b"\n");
        }
        flood.finish();
        assert_eq!(flood.lines.len(), MAX_LOG_LINES);
        assert_eq!(flood.dropped, 10_000 - MAX_LOG_LINES);
        assert!(flood.kept <= MAX_OUTPUT);
    }

    #[test]
    fn the_same_call_gives_the_same_random_stream_and_another_call_another() {
        use rand_core::Rng;
        let call = |action: &str| ToolCall {
            action: action.into(),
            arguments: "{}".into(),
            context: "{}".into(),
            agent_id: "a".into(),
            key_id: "k".into(),
            session_id: "s".into(),
            tenant_id: "t".into(),
            target: None,
            timestamp_ms: 1,
        };
        let draw = |w: &CallWasi| CallRandom::new(&w.seed, b"secure").next_u64();
        let a = CallWasi::new(&call("a"));
        assert_eq!(draw(&a), draw(&CallWasi::new(&call("a"))));
        assert_ne!(draw(&a), draw(&CallWasi::new(&call("b"))));
    }
}
