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

/// The WASI interfaces that Rust's standard library links on `wasm32-wasip2`. A policy may
/// import these (any 0.2.x version) so that ordinary Rust compiles, but every function in them
/// traps when called: they grant nothing.
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

/// Why a policy component was refused at load time.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not a WebAssembly component (e.g. a core module, or not Wasm at all).
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(&'static str),
    /// The component failed to validate or compile.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// The component imports something outside `writ:policy/host` and the std WASI subset.
    #[error(
        "forbidden import `{0}`: policies may import only `writ:policy/host` and the WASI interfaces Rust's std links"
    )]
    ForbiddenImport(String),
    /// The component does not implement the `writ:policy/policy` world.
    #[error("component does not implement the writ:policy@0.1.0 `policy` world: {0}")]
    WrongWorld(String),
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
    /// `writ:policy/host`, shared by every policy; WASI stubs are added per policy.
    linker: Linker<CallState>,
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
            .total_core_instances(config.max_instances * 4)
            .total_memories(config.max_instances)
            .total_tables(config.max_instances * 2)
            .max_memories_per_component(1)
            .max_tables_per_component(4)
            .max_core_instances_per_component(8)
            .max_memory_size(config.max_memory_bytes as usize)
            .linear_memory_keep_resident(config.memory_keep_resident)
            .table_keep_resident(64 << 10)
            .max_unused_warm_slots(config.max_warm_slots)
            .pagemap_scan(Enabled::Auto)
            // One fiber stack per evaluation running at once.
            .total_stacks(config.max_instances);

        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack(config.max_wasm_stack)
            .cranelift_opt_level(OptLevel::Speed)
            .memory_init_cow(true)
            // No wasm backtraces: a failed policy is reported by its trap code and its own
            // panic message (sent through `host.log`), and the address maps backtraces need
            // cost every loaded policy memory.
            .generate_address_map(false)
            .wasm_backtrace_max_frames(None)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = wasmtime::Engine::new(&wasm)?;

        let mut linker = Linker::new(&engine);
        crate::bindings::add_host_to_linker(&mut linker)?;

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
    pub fn compile(&self, bytes: &[u8]) -> Result<CompiledPolicy, LoadError> {
        if !wasmparser::Parser::is_component(bytes) {
            return Err(LoadError::NotAComponent(
                if wasmparser::Parser::is_core_wasm(bytes) {
                    "this is a core module; build for wasm32-wasip2, which produces a component"
                } else {
                    "no WebAssembly component header"
                },
            ));
        }
        let component = Component::new(&self.inner.engine, bytes)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        self.link(Engine::policy_id(bytes), bytes.len(), component)
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
        for (name, item) in component.component_type().imports(engine) {
            if name == HOST_INTERFACE || name == TYPES_INTERFACE {
                continue;
            }
            if !is_std_wasi(name) {
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
            }),
        })
    }
}

/// Whether `name` is one of [`STD_WASI_INTERFACES`] at a 0.2.x version.
fn is_std_wasi(name: &str) -> bool {
    let Some((interface, version)) = name.split_once('@') else {
        return false;
    };
    version.starts_with("0.2.") && STD_WASI_INTERFACES.contains(&interface)
}

/// Defines every function of a WASI interface the component imports as one that traps with
/// [`WasiDenied`], and every resource as an empty host resource.
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
                scope.resource(name, ResourceType::host::<WasiDenied>(), |_, _| Ok(()))?;
            }
            _ => {}
        }
    }
    Ok(())
}
