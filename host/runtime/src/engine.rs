//! The process-wide wasmtime engine: its configuration, the epoch ticker that enforces
//! deadlines, and loading policies (validation, compilation, the `InstancePre` kept per policy).
//!
//! Evaluating a loaded policy lives in [`crate::evaluation`].

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::component::types::{ComponentExtern, ComponentItem};
use wasmtime::component::{Component, Linker, ResourceType};
use wasmtime::{Config, Enabled, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

use crate::bindings::{PolicyPre, WasiDenied};
use crate::evaluation::CallState;

/// The WIT package a policy's host import must come from.
const HOST_INTERFACE: &str = "writ:policy/host@0.1.0";
const TYPES_INTERFACE: &str = "writ:policy/types@0.1.0";

/// The WASI interfaces a policy may import (any 0.2.x version), as Rust's std, CPython and
/// SpiderMonkey link them: answered deterministically, reaching nothing (see `crate::wasi`).
const STD_WASI_INTERFACES: &[&str] = &[
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

/// The socket interfaces CPython's libc imports whether or not a policy uses them: linked so
/// that such components load, every function trapping ([`WasiDenied`]).
const SOCKET_INTERFACES: &[&str] = &[
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/ip-name-lookup",
];

/// Why a policy component was refused at load time.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not a WebAssembly component (e.g. a core module, or not Wasm at all).
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(&'static str),
    /// The component failed to validate or compile.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// The component imports something outside `writ:policy/host` and the WASI the sandbox
    /// answers (cli, clocks, io, random, filesystem; sockets, trapping).
    #[error(
        "forbidden import `{0}`: policies may import only `writ:policy/host` and WASI 0.2's cli, clocks, io, random, filesystem and sockets interfaces"
    )]
    ForbiddenImport(String),
    /// The component does not implement the `writ:policy/policy` world.
    #[error("component does not implement the writ:policy@0.1.0 `policy` world: {0}")]
    WrongWorld(String),
    /// Compiling the component went past a bound of [`CompileLimits`] (named in the message).
    #[error("the component is too costly to compile: {0}")]
    TooCostly(String),
    /// The compiler process could not be run; the component was not judged.
    #[error("the policy compiler failed: {0}")]
    Compiler(String),
    /// A precompiled artifact could not be used (different engine version or settings).
    #[error("precompiled artifact unusable: {0}")]
    Artifact(String),
}

/// Settings fixed for the life of the process. Per-call limits are in
/// [`crate::evaluation::Limits`].
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Instances that may be alive at once; the gateway admits no more concurrent evaluations.
    pub max_instances: u32,
    /// The largest linear memory any tenant may be given. Per-call memory limits are enforced
    /// below this by a `ResourceLimiter`; this bounds the pool's address-space slots.
    pub max_memory_bytes: u64,
    /// How often the engine's epoch advances: the resolution of deadlines.
    pub epoch_tick: Duration,
    /// Wasm stack bound, so that deep recursion traps instead of exhausting the host thread.
    pub max_wasm_stack: usize,
    /// Bytes at the bottom of each pooled linear memory kept resident between instances:
    /// reset to the initial image in place (only the pages that were written, found with
    /// Linux's `PAGEMAP_SCAN` where available) rather than returned to the kernel, so a fresh
    /// instance's first touches of its stack and heap do not page-fault.
    pub memory_keep_resident: usize,
    /// Pool slots kept warm (resident, with their last module's image) when unused. A call
    /// whose policy finds no warm slot of its own module takes one last used by another and
    /// maps its image anew, which with many tenants costs more than the evaluation itself. Each
    /// slot holds up to `memory_keep_resident` bytes, so this also bounds what idle slots hold
    /// (about 0.2 MiB each for the example policies; 128 MiB if every policy dirtied 1 MiB).
    pub max_warm_slots: u32,
    /// Bounds on compiling a component with [`Engine::compile_bounded`].
    pub compile: CompileLimits,
}

/// Bounds on compiling an uploaded component. wasmtime cannot interrupt a compilation under
/// way, so [`Engine::compile_bounded`] compiles in a child process (on Linux) that is killed
/// past `timeout` and cannot allocate more than `memory_bytes`; the gateway runs at most
/// `max_concurrent` of them at once.
#[derive(Debug, Clone)]
pub struct CompileLimits {
    /// Wall time one compilation may take; past it the compiler is killed and the component
    /// refused.
    pub timeout: Duration,
    /// Memory one compilation may use: the compiler's `RLIMIT_DATA` (its heap and private
    /// writable mappings, the component and the compiled code included).
    pub memory_bytes: u64,
    /// Compilations the gateway runs at once; more wait for one to finish.
    pub max_concurrent: usize,
    /// Uploads that may wait for a compilation slot at once; beyond, refused at once.
    pub max_waiting: usize,
    /// Longest an upload waits for a compilation slot before it is refused.
    pub max_wait: Duration,
}

impl Default for CompileLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            memory_bytes: 1 << 30,
            max_concurrent: 2,
            max_waiting: 8,
            max_wait: Duration::from_secs(30),
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_instances: 256,
            max_memory_bytes: 256 << 20,
            epoch_tick: Duration::from_millis(1),
            max_wasm_stack: 512 << 10,
            memory_keep_resident: 1 << 20,
            max_warm_slots: 128,
            compile: CompileLimits::default(),
        }
    }
}

/// A loaded policy: its id and the pre-linked component, ready to instantiate. Cheap to clone.
#[derive(Clone)]
pub struct CompiledPolicy {
    inner: Arc<CompiledInner>,
}

struct CompiledInner {
    id: String,
    size: usize,
    component: Component,
    pre: PolicyPre<CallState>,
    /// Whether the component imports any WASI interface (else no call can reach its context).
    wasi: bool,
}

impl CompiledPolicy {
    /// The policy's id: the blake3 hash (hex) of its component bytes.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Size of the component, in bytes.
    pub fn size(&self) -> usize {
        self.inner.size
    }

    /// Whether `other` is this very loaded policy (not merely one with the same id).
    pub fn shares_code_with(&self, other: &CompiledPolicy) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    pub(crate) fn pre(&self) -> &PolicyPre<CallState> {
        &self.inner.pre
    }

    pub(crate) fn imports_wasi(&self) -> bool {
        self.inner.wasi
    }

    /// The compiled artifact, for [`Engine::load_precompiled`] after a restart.
    pub fn serialize(&self) -> Result<Vec<u8>, LoadError> {
        self.inner
            .component
            .serialize()
            .map_err(|e| LoadError::Artifact(e.to_string()))
    }
}

impl std::fmt::Debug for CompiledPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledPolicy")
            .field("id", &self.inner.id)
            .field("size", &self.inner.size)
            .finish()
    }
}

/// The policy runtime: one per process. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    engine: wasmtime::Engine,
    /// `writ:policy/host` and the sandbox's WASI, shared by every policy; the socket stubs are
    /// added per policy.
    linker: Linker<CallState>,
    /// Bounds of [`Engine::compile_bounded`].
    compile: CompileLimits,
    /// The compiler process builds its engine with the same wasm stack bound.
    max_wasm_stack: usize,
    ticker: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Drop for EngineInner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}

impl Engine {
    /// Builds the engine and starts its epoch ticker thread.
    pub fn new(config: &EngineConfig) -> wasmtime::Result<Self> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(config.max_instances)
            .total_core_instances(config.max_instances * 16)
            .total_memories(config.max_instances * 2)
            .total_tables(config.max_instances * 4)
            // CPython under componentize-py is 14 core instances (libc, libpython, adapters).
            .max_memories_per_component(2)
            .max_tables_per_component(8)
            .max_core_instances_per_component(32)
            .max_memory_size(config.max_memory_bytes as usize)
            .linear_memory_keep_resident(config.memory_keep_resident)
            .table_keep_resident(64 << 10)
            .max_unused_warm_slots(config.max_warm_slots)
            .pagemap_scan(Enabled::Auto)
            // One fiber stack per evaluation running at once.
            .total_stacks(config.max_instances);

        let mut wasm = wasm_config(config.max_wasm_stack);
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = wasmtime::Engine::new(&wasm)?;

        let mut linker = Linker::new(&engine);
        crate::bindings::add_host_to_linker(&mut linker)?;
        crate::wasi::add_to_linker(&mut linker)?;

        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let engine = engine.weak();
            let stop = stop.clone();
            let tick = config.epoch_tick;
            std::thread::Builder::new()
                .name("writ-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        match engine.upgrade() {
                            Some(engine) => engine.increment_epoch(),
                            None => break,
                        }
                    }
                })?
        };

        Ok(Self {
            inner: Arc::new(EngineInner {
                engine,
                linker,
                compile: config.compile.clone(),
                max_wasm_stack: config.max_wasm_stack,
                ticker: Some(ticker),
                stop,
            }),
        })
    }

    pub(crate) fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner.engine
    }

    /// The id a component would get: the blake3 hash (hex) of its bytes.
    pub fn policy_id(bytes: &[u8]) -> String {
        blake3::hash(bytes).to_hex().to_string()
    }

    /// Validates and compiles a policy component.
    ///
    /// Refuses anything that is not a component, imports outside `writ:policy/host` and the
    /// std WASI subset (naming the import), or does not export this world's `evaluate`.
    /// Compiles in this process, unbounded: for tools run on the author's own components (`writ
    /// policy test`); the gateway uses [`Engine::compile_bounded`].
    pub fn compile(&self, bytes: &[u8]) -> Result<CompiledPolicy, LoadError> {
        check_component_header(bytes)?;
        let component = Component::new(&self.inner.engine, bytes)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        self.link(Engine::policy_id(bytes), bytes.len(), component)
    }

    /// The bounds [`Engine::compile_bounded`] works within.
    pub fn compile_limits(&self) -> &CompileLimits {
        &self.inner.compile
    }

    /// Validates and compiles a policy component within [`CompileLimits`]: its time and memory
    /// budget (a compilation past either is refused with [`LoadError::TooCostly`], naming the
    /// bound). Returns the loaded policy and its compiled artifact (as
    /// [`CompiledPolicy::serialize`] gives it), to be stored.
    ///
    /// On Linux the compilation runs in a child process, this executable started again as the
    /// policy compiler (see [`compiler_process`]): niced, limited by `RLIMIT_DATA` and
    /// `RLIMIT_CPU`, compiling on one thread, and killed at the deadline, so a costly component
    /// takes one core at low priority and at most its memory budget, and never the gateway's
    /// own memory. Elsewhere it compiles in this process and only the deadline is checked,
    /// after the fact. Blocks the calling thread for the compilation: call from a blocking
    /// thread.
    pub fn compile_bounded(&self, bytes: &[u8]) -> Result<(CompiledPolicy, Vec<u8>), LoadError> {
        check_component_header(bytes)?;
        let id = Engine::policy_id(bytes);
        #[cfg(target_os = "linux")]
        {
            let artifact =
                compiler_process::compile(bytes, &self.inner.compile, self.inner.max_wasm_stack)?;
            let compiled = match self.load_precompiled(&id, bytes.len(), &artifact) {
                Err(LoadError::Artifact(e)) => {
                    return Err(LoadError::Compiler(format!(
                        "the compiler's artifact does not load: {e}"
                    )));
                }
                other => other?,
            };
            Ok((compiled, artifact))
        }
        #[cfg(not(target_os = "linux"))]
        {
            let started = std::time::Instant::now();
            let component = Component::new(&self.inner.engine, bytes)
                .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
            if started.elapsed() > self.inner.compile.timeout {
                return Err(time_budget(&self.inner.compile));
            }
            let compiled = self.link(id, bytes.len(), component)?;
            let artifact = compiled.serialize()?;
            Ok((compiled, artifact))
        }
    }

    /// Loads an artifact from [`CompiledPolicy::serialize`], skipping compilation.
    ///
    /// `id` and `size` are those of the component the artifact was compiled from; the caller
    /// must only pass artifacts this process's store wrote (see the safety note below).
    pub fn load_precompiled(
        &self,
        id: &str,
        size: usize,
        artifact: &[u8],
    ) -> Result<CompiledPolicy, LoadError> {
        // SAFETY: `Component::deserialize` trusts its input to be machine code that wasmtime
        // produced. Writ only passes artifacts it serialized itself into its own data
        // directory, and wasmtime checks the version and engine settings before use.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(&self.inner.engine, artifact) }
            .map_err(|e| LoadError::Artifact(format!("{e:#}")))?;
        self.link(id.to_owned(), size, component)
    }

    /// [`Engine::load_precompiled`] from an artifact file, which wasmtime maps rather than
    /// copies: only the pages of code a policy runs become resident.
    pub fn load_precompiled_file(
        &self,
        id: &str,
        size: usize,
        artifact: &Path,
    ) -> Result<CompiledPolicy, LoadError> {
        // SAFETY: as in `load_precompiled`: Writ only passes artifact files it wrote itself
        // into its own data directory, and wasmtime checks the version and engine settings.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize_file(&self.inner.engine, artifact) }
            .map_err(|e| LoadError::Artifact(format!("{e:#}")))?;
        self.link(id.to_owned(), size, component)
    }

    fn link(
        &self,
        id: String,
        size: usize,
        component: Component,
    ) -> Result<CompiledPolicy, LoadError> {
        let engine = &self.inner.engine;
        let mut linker = self.inner.linker.clone();
        let mut wasi = false;
        for (name, item) in component.component_type().imports(engine) {
            if name == HOST_INTERFACE || name == TYPES_INTERFACE {
                continue;
            }
            wasi = true;
            if is_wasi(name, STD_WASI_INTERFACES) {
                continue;
            }
            if !is_wasi(name, SOCKET_INTERFACES) {
                return Err(LoadError::ForbiddenImport(name.to_owned()));
            }
            stub_wasi(&mut linker, engine, name, &item)
                .map_err(|e| LoadError::Invalid(format!("linking `{name}`: {e:#}")))?;
        }
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        let pre =
            PolicyPre::new(instance_pre).map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        Ok(CompiledPolicy {
            inner: Arc::new(CompiledInner {
                id,
                size,
                component,
                pre,
                wasi,
            }),
        })
    }
}

/// The engine settings, but for instance allocation: the same in the gateway and in the
/// compiler process, so the artifacts the one compiles load into the other.
fn wasm_config(max_wasm_stack: usize) -> Config {
    let mut wasm = Config::new();
    wasm.wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(max_wasm_stack)
        .cranelift_opt_level(OptLevel::Speed)
        .memory_init_cow(true)
        // No wasm backtraces: a failed policy is reported by its trap code and its own
        // panic message (sent through `host.log`), and the address maps backtraces need
        // cost every loaded policy memory.
        .generate_address_map(false)
        .wasm_backtrace_max_frames(None);
    wasm
}

/// Refuses what is not a component before any compiling.
fn check_component_header(bytes: &[u8]) -> Result<(), LoadError> {
    if wasmparser::Parser::is_component(bytes) {
        return Ok(());
    }
    Err(LoadError::NotAComponent(
        if wasmparser::Parser::is_core_wasm(bytes) {
            "this is a core module; build for wasm32-wasip2, which produces a component"
        } else {
            "no WebAssembly component header"
        },
    ))
}

fn time_budget(limits: &CompileLimits) -> LoadError {
    LoadError::TooCostly(format!(
        "compiling it took longer than the compile time budget of {} ms",
        limits.timeout.as_millis()
    ))
}

fn memory_budget(limits: &CompileLimits) -> LoadError {
    LoadError::TooCostly(format!(
        "compiling it needed more than the compile memory budget of {} MiB",
        limits.memory_bytes >> 20
    ))
}

/// The policy compiler as a child process: the running executable started again with
/// [`compiler_process::ARG`] and [`compiler_process::ENV`], which a constructor of this crate
/// (run before `main`, so whatever binary links the runtime, the `writ` CLI or a test) turns
/// into a compiler: it limits itself, reads the component from stdin, and writes a tag and the
/// artifact or the error to stdout.
#[cfg(target_os = "linux")]
mod compiler_process {
    use std::io::{Read as _, Write as _};
    use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use super::{CompileLimits, LoadError, memory_budget, time_budget, wasm_config};

    /// The variable that makes a process a policy compiler; its value is
    /// `<memory bytes>,<cpu seconds>,<max wasm stack>`.
    pub(super) const ENV: &str = "WRIT_POLICY_COMPILER";
    /// The first argument of a policy compiler (so a binary that does not link the constructor
    /// refuses it as an unknown argument instead of running as itself).
    pub(super) const ARG: &str = "--writ-policy-compiler";
    /// Bytes of the compiler's stderr kept for the log.
    const STDERR_KEPT: u64 = 4096;

    /// Run by the C runtime before `main` in every process of a binary that links this crate:
    /// one environment lookup, then nothing unless the process is a policy compiler.
    #[allow(unsafe_code)]
    #[used]
    #[unsafe(link_section = ".init_array")]
    pub(super) static CONSTRUCTOR: extern "C" fn() = constructor;

    extern "C" fn constructor() {
        let Some(spec) = std::env::var_os(ENV) else {
            return;
        };
        let second_arg = std::fs::read("/proc/self/cmdline")
            .ok()
            .and_then(|cmdline| cmdline.split(|b| *b == 0).nth(1).map(<[u8]>::to_vec));
        if second_arg.as_deref() != Some(ARG.as_bytes()) {
            return;
        }
        let code = std::panic::catch_unwind(|| serve(&spec.to_string_lossy())).unwrap_or(70);
        std::process::exit(code);
    }

    /// The compiler: limits itself, then compiles stdin to stdout. Tags: `OK` and the artifact,
    /// `ER` and why the component is invalid, `ME` when memory ran out, `XX` and why it could
    /// not work.
    fn serve(spec: &str) -> i32 {
        let mut out = std::io::stdout().lock();
        let answer = |out: &mut std::io::StdoutLock<'_>, tag: &[u8], body: &[u8]| {
            let written = out
                .write_all(tag)
                .and_then(|()| out.write_all(body))
                .and_then(|()| out.flush());
            if written.is_ok() { 0 } else { 74 }
        };
        let numbers: Vec<u64> = spec.split(',').filter_map(|n| n.parse().ok()).collect();
        let &[memory_bytes, cpu_s, max_wasm_stack] = numbers.as_slice() else {
            return answer(&mut out, b"XX", b"malformed compiler settings");
        };
        use rustix::process::{Resource, Rlimit, nice, setrlimit};
        let limit = |resource, value: u64| {
            let limit = Rlimit {
                current: Some(value),
                maximum: Some(value),
            };
            setrlimit(resource, limit).is_ok()
        };
        if !(limit(Resource::Core, 0)
            && limit(Resource::Cpu, cpu_s)
            && limit(Resource::Data, memory_bytes))
        {
            return answer(&mut out, b"XX", b"setrlimit failed");
        }
        // Lower priority than the gateway's evaluations; a failure leaves it as it was.
        let _ = nice(10);
        let mut component = Vec::new();
        if std::io::stdin().read_to_end(&mut component).is_err() {
            return answer(&mut out, b"XX", b"reading the component failed");
        }
        let mut config = wasm_config(max_wasm_stack as usize);
        config.parallel_compilation(false);
        let compiled = wasmtime::Engine::new(&config)
            .and_then(|engine| engine.precompile_component(&component));
        match compiled {
            Ok(artifact) => answer(&mut out, b"OK", &artifact),
            Err(e) => {
                let message = format!("{e:#}");
                if message.contains("Cannot allocate memory") || message.contains("out of memory") {
                    answer(&mut out, b"ME", message.as_bytes())
                } else {
                    answer(&mut out, b"ER", message.as_bytes())
                }
            }
        }
    }

    /// Compiles `component` in a compiler process within `limits`; returns the artifact.
    pub(super) fn compile(
        component: &[u8],
        limits: &CompileLimits,
        max_wasm_stack: usize,
    ) -> Result<Vec<u8>, LoadError> {
        // The constructor's object must be linked into whatever binary starts a compiler.
        std::hint::black_box(&CONSTRUCTOR);
        let exe = if std::path::Path::new("/proc/self/exe").exists() {
            std::path::PathBuf::from("/proc/self/exe")
        } else {
            std::env::current_exe()
                .map_err(|e| LoadError::Compiler(format!("finding this executable: {e}")))?
        };
        // The CPU limit is only a backstop: the wall-clock deadline comes first.
        let cpu_s = limits.timeout.as_secs() + 2;
        let mut child = Command::new(exe)
            .arg0("writ-policy-compiler")
            .arg(ARG)
            .env_clear()
            .env(
                ENV,
                format!("{},{cpu_s},{max_wasm_stack}", limits.memory_bytes),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| LoadError::Compiler(format!("starting the compiler: {e}")))?;
        let (stdin, stdout, stderr) = (
            child.stdin.take().expect("piped"),
            child.stdout.take().expect("piped"),
            child.stderr.take().expect("piped"),
        );
        let deadline = Instant::now() + limits.timeout;
        let (status, out, err) = std::thread::scope(|scope| {
            scope.spawn(move || {
                let mut stdin = stdin;
                // A compiler that stopped reading (it died) is judged by its exit.
                let _ = stdin.write_all(component);
            });
            // The compiler's output is within its memory budget; a little more is refused.
            let out = scope.spawn(move || {
                let mut out = Vec::new();
                let _ = stdout.take(limits.memory_bytes + 2).read_to_end(&mut out);
                out
            });
            let err = scope.spawn(move || {
                let mut kept = Vec::new();
                let mut stderr = stderr;
                let _ = (&mut stderr).take(STDERR_KEPT).read_to_end(&mut kept);
                let _ = std::io::copy(&mut stderr, &mut std::io::sink());
                kept
            });
            let status = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break Ok(Some(status)),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Ok(None) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break Ok(None);
                    }
                    Err(e) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break Err(e);
                    }
                }
            };
            let out = out.join().unwrap_or_default();
            let err = err.join().unwrap_or_default();
            (status, out, err)
        });
        let status =
            status.map_err(|e| LoadError::Compiler(format!("waiting for the compiler: {e}")))?;
        let Some(status) = status else {
            return Err(time_budget(limits));
        };
        let message = |body: &[u8]| String::from_utf8_lossy(body).into_owned();
        let stderr = String::from_utf8_lossy(&err);
        match (out.get(..2), out.get(2..).unwrap_or_default()) {
            (Some(b"OK"), artifact) if status.success() => Ok(artifact.to_vec()),
            (Some(b"ER"), body) => Err(LoadError::Invalid(message(body))),
            (Some(b"ME"), _) => Err(memory_budget(limits)),
            (Some(b"XX"), body) => Err(LoadError::Compiler(message(body))),
            _ if stderr.contains("memory allocation of") => Err(memory_budget(limits)),
            _ => match status.signal() {
                // SIGKILL: the CPU limit's hard bound, or the kernel out of memory.
                Some(9) => Err(LoadError::TooCostly(format!(
                    "the compiler was killed: over the compile time budget of {} ms or out of memory",
                    limits.timeout.as_millis()
                ))),
                Some(signal) => {
                    tracing::warn!(signal, stderr = %stderr, "the policy compiler died");
                    Err(LoadError::Invalid(format!(
                        "the compiler stopped on this component (signal {signal})"
                    )))
                }
                None => Err(LoadError::Compiler(format!(
                    "the compiler exited with {status}: {}",
                    stderr.trim()
                ))),
            },
        }
    }
}

/// Whether `name` is one of `interfaces` at a 0.2.x version.
fn is_wasi(name: &str, interfaces: &[&str]) -> bool {
    let Some((interface, version)) = name.split_once('@') else {
        return false;
    };
    version.starts_with("0.2.") && interfaces.contains(&interface)
}

/// Defines every function of a WASI interface the component imports as one that traps with
/// [`WasiDenied`], and every resource it defines as an empty host resource (those it takes
/// from `wasi:io` as the real ones).
fn stub_wasi(
    linker: &mut Linker<CallState>,
    engine: &wasmtime::Engine,
    interface: &str,
    item: &ComponentExtern<'_>,
) -> wasmtime::Result<()> {
    let ComponentItem::ComponentInstance(instance) = &item.ty else {
        return Err(wasmtime::Error::msg("expected an interface"));
    };
    let mut root = linker.root();
    let mut scope = root.instance(interface)?;
    for (name, export) in instance.exports(engine) {
        match export.ty {
            ComponentItem::ComponentFunc(_) => {
                let function = format!("{interface}#{name}");
                scope.func_new(name, move |_, _, _, _| {
                    Err(WasiDenied {
                        function: function.clone(),
                    }
                    .into())
                })?;
            }
            ComponentItem::Resource(_) => {
                let ty = crate::wasi::io_resource_type(name)
                    .unwrap_or_else(ResourceType::host::<WasiDenied>);
                scope.resource(name, ty, |_, _| Ok(()))?;
            }
            _ => {}
        }
    }
    Ok(())
}
