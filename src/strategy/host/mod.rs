//! The WebAssembly host: one wasmtime `Engine`, compiled plugins cached by content hash, and one
//! sandboxed instance per shared group.
//!
//! Every call into a guest runs synchronously under the group's lock with an epoch deadline (a
//! background thread ticks the engine's epoch every millisecond), in a store whose memory is
//! capped. Setting an instance up (instantiation and `init`, and replaying membership into it)
//! gets a longer deadline of its own than a call on the message path. Guests get no
//! capabilities: any import a component declares (a Rust `wasm32-wasip2` guest imports WASI it
//! never calls) is linked to a function that traps. A plugin whose config opts in (`wasi =
//! true`: Python and JavaScript runtimes call WASI clocks and random while they run) gets real
//! WASI functions over a context that grants nothing else: no files, no environment, no
//! arguments, no network, stdio closed.
//!
//! The parts: `contract.rs` is what the host asks of a contract version, one file per version
//! it speaks (`v0_1.rs`, `v0_2.rs`) its bindings and adapters, `instance.rs` a group's live
//! instance, `cache.rs` the compiled-plugin cache on disk.

mod cache;
mod contract;
mod instance;
mod v0_1;
mod v0_2;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use wasmtime::component::ResourceTable;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config as EngineConfig, Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::plugin_log::PluginLog;
use super::StrategyError;
use contract::LinkedContract;
use instance::is_interrupt;

pub use cache::check_cache_dir;
pub use instance::WasmInstance;

/// How long one engine epoch lasts; deadlines are counted in these.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// The config key that lets a plugin import WASI; named in errors so an operator knows the fix.
pub const WASI_KEY: &str = "wasi";

/// WASI interfaces a guest may import without opting in: the `wasm32-wasip2` Rust and C
/// standard libraries declare these (command-line environment, exit, stdio streams) even when
/// the strategy never uses them. They are linked as traps. Any other WASI import (clocks,
/// random, filesystem, sockets) is what a language runtime needs at run time, so it requires
/// `wasi = true`.
const WASI_TOLERATED_PREFIXES: &[&str] = &["wasi:cli/", "wasi:io/"];

/// Limits applied to every guest instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Linear memory a guest may grow to, in bytes.
    pub memory_bytes: usize,
    /// Epoch ticks (milliseconds) one call may run before it is interrupted.
    pub deadline_ticks: u64,
    /// Epoch ticks that instantiation and `init` together may run, and again a replay of the
    /// group's membership into a new instance.
    pub init_deadline_ticks: u64,
}

impl SandboxLimits {
    /// Limits as the config and `sharq plugin check` state them: memory in MiB, deadlines in
    /// milliseconds (at least one epoch tick each).
    pub fn from_mib_and_ms(
        memory_mib: u32,
        deadline_ms: u64,
        init_deadline_ms: u64,
    ) -> SandboxLimits {
        SandboxLimits {
            memory_bytes: memory_mib as usize * 1024 * 1024,
            deadline_ticks: deadline_ms.max(1),
            init_deadline_ticks: init_deadline_ms.max(1),
        }
    }
}

/// Arms `store` to trap once `ticks` full epoch ticks have passed. The ticker may advance the
/// epoch right after this, so a deadline of N ticks could end after N-1 full ones: one more tick
/// makes the configured time a lower bound.
fn arm_store(store: &mut Store<GuestState>, ticks: u64) {
    store.set_epoch_deadline(ticks.saturating_add(1));
}

/// A compiled plugin, ready to instantiate cheaply for any number of groups.
pub struct Plugin {
    /// Where it came from (a built-in's name or a file path), for logs.
    pub origin: String,
    /// SHA-256 of the component bytes: the cache key, and how a reload tells "unchanged".
    pub digest: [u8; 32],
    /// Whether WASI was linked (the group opted in); otherwise every import traps.
    pub wasi: bool,
    /// Kept to link the same compilation again with or without WASI.
    component: Component,
    pre: Box<dyn LinkedContract>,
}

impl Plugin {
    /// The contract version the component implements (the host links the newest it exports).
    pub fn contract_version(&self) -> &'static str {
        self.pre.version()
    }
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// Per-instance host state: the resource limiter, the WASI context for guests that opted in
/// (empty and unused for the others), and the `log` import's rate limit.
pub struct GuestState {
    limits: StoreLimits,
    wasi: WasiCtx,
    table: ResourceTable,
    log: PluginLog,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A WASI context that grants nothing: `WasiCtxBuilder` starts with no preopened directories,
/// no environment, no arguments, stdin empty, stdout/stderr discarded, and every network
/// address denied. Clocks and a random source remain, because language runtimes read them
/// while initialising; the strategy rules forbid letting them change a choice.
fn null_wasi() -> WasiCtx {
    WasiCtxBuilder::new().build()
}

/// A loaded plugin's identity: the component's SHA-256, and whether WASI is linked.
type PluginKey = ([u8; 32], bool);

/// The shared engine. Cheap to clone.
#[derive(Clone)]
pub struct WasmHost {
    inner: Arc<HostInner>,
}

struct HostInner {
    engine: Engine,
    limits: SandboxLimits,
    /// Compiled and linked plugins by identity. A leaf lock, held for a lookup or an insert:
    /// compiling happens outside it (two loads of the same new bytes may both compile).
    compiled: Mutex<HashMap<PluginKey, Arc<Plugin>>>,
    /// Where compiled components are kept across restarts, keyed by content hash and engine
    /// compatibility; `None` keeps the cache in memory only.
    disk_cache: Option<PathBuf>,
    /// Stops the epoch ticker when the host is dropped.
    stop: Arc<AtomicBool>,
}

impl Drop for HostInner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for WasmHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmHost")
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

impl WasmHost {
    pub fn new(limits: SandboxLimits) -> Result<WasmHost, StrategyError> {
        WasmHost::with_disk_cache(limits, None)
    }

    /// A host that also keeps compiled components in `disk_cache`, so a restart or a reload of
    /// an unchanged plugin skips compilation. The directory must be private to the broker: its
    /// files are loaded as native code.
    pub fn with_disk_cache(
        limits: SandboxLimits,
        disk_cache: Option<PathBuf>,
    ) -> Result<WasmHost, StrategyError> {
        if let Some(dir) = &disk_cache {
            check_cache_dir(dir)?;
        }
        let mut config = EngineConfig::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(StrategyError::Engine)?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.weak();
        let ticker_stop = stop.clone();
        std::thread::Builder::new()
            .name("sharq-wasm-epoch".into())
            .spawn(move || {
                while !ticker_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match ticker_engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                }
            })
            .map_err(StrategyError::EpochTicker)?;
        Ok(WasmHost {
            inner: Arc::new(HostInner {
                engine,
                limits,
                compiled: Mutex::new(HashMap::new()),
                disk_cache,
                stop,
            }),
        })
    }

    pub fn limits(&self) -> SandboxLimits {
        self.inner.limits
    }

    /// Compiles and links a component without WASI, or returns the cached compilation of
    /// identical bytes. Slow (milliseconds to seconds): call it off the hot path.
    pub fn load(&self, origin: &str, bytes: &[u8]) -> Result<Arc<Plugin>, StrategyError> {
        self.load_with(origin, bytes, false)
    }

    /// Like [`WasmHost::load`]; with `wasi` the guest's WASI imports are served by an empty
    /// context instead of traps. Without it, a component importing WASI beyond what standard
    /// libraries declare is refused with an error naming the `wasi` key.
    pub fn load_with(
        &self,
        origin: &str,
        bytes: &[u8],
        wasi: bool,
    ) -> Result<Arc<Plugin>, StrategyError> {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        if let Some(plugin) = self.inner.compiled.lock().get(&(digest, wasi)) {
            return Ok(plugin.clone());
        }
        let fail = |stage: &'static str| {
            let origin = origin.to_owned();
            move |source: wasmtime::Error| StrategyError::Load {
                origin: origin.clone(),
                stage,
                source,
            }
        };
        // The same bytes loaded once with and once without WASI compile once.
        let known = self
            .inner
            .compiled
            .lock()
            .get(&(digest, !wasi))
            .map(|plugin| plugin.component.clone());
        let component = match known.or_else(|| self.load_cached(&digest)) {
            Some(component) => component,
            None => {
                let started = std::time::Instant::now();
                let component =
                    Component::new(&self.inner.engine, bytes).map_err(fail("compile"))?;
                tracing::info!(
                    plugin = origin,
                    bytes = bytes.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "compiled strategy plugin"
                );
                self.store_cached(&digest, &component);
                component
            }
        };
        let mut linker: Linker<GuestState> = Linker::new(&self.inner.engine);
        // Every version's imports are offered to every component; one that does not import
        // them never sees them.
        for contract in contract::CONTRACTS {
            (contract.add_imports)(&mut linker).map_err(fail(contract.imports_stage))?;
        }
        if wasi {
            wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(fail("link WASI"))?;
        } else if let Some(import) = self.runtime_wasi_import(&component) {
            return Err(StrategyError::NeedsWasi {
                origin: origin.to_owned(),
                import,
            });
        }
        if !wasi {
            // Without WASI every import traps if it is ever called. Not done with WASI: its
            // check for "unknown" is by exact name, so it would shadow with traps the WASI
            // functions a guest built against a newer 0.2.x patch release imports (the linker
            // itself matches those semver-compatibly); anything else such a guest imports is
            // a link error naming the import.
            linker
                .define_unknown_imports_as_traps(&component)
                .map_err(fail("link"))?;
        }
        let instance_pre = linker.instantiate_pre(&component).map_err(fail("link"))?;
        // The newest contract the component exports; older components load unchanged.
        let pre = contract::link(&instance_pre).map_err(fail(contract::link_stage()))?;
        let plugin = Arc::new(Plugin {
            origin: origin.to_owned(),
            digest,
            wasi,
            component,
            pre,
        });
        self.inner
            .compiled
            .lock()
            .insert((digest, wasi), plugin.clone());
        Ok(plugin)
    }

    /// The first WASI import of `component` that only a `wasi = true` plugin may have.
    fn runtime_wasi_import(&self, component: &Component) -> Option<String> {
        let engine = &self.inner.engine;
        component
            .component_type()
            .imports(engine)
            .map(|(name, _)| name)
            .find(|name| {
                name.starts_with("wasi:")
                    && !WASI_TOLERATED_PREFIXES
                        .iter()
                        .any(|prefix| name.starts_with(prefix))
            })
            .map(str::to_owned)
    }

    /// Instantiates `plugin` for one group, with the host's default limits, and calls `init`.
    pub fn instantiate(
        &self,
        plugin: &Arc<Plugin>,
        group: &str,
        params: &[(String, String)],
    ) -> Result<WasmInstance, StrategyError> {
        self.instantiate_limited(plugin, group, params, self.inner.limits)
    }

    /// Like [`WasmHost::instantiate`], with limits of the plugin's own (Python and JavaScript
    /// runtimes need tens of MiB where a Rust or C guest needs one or two).
    pub fn instantiate_limited(
        &self,
        plugin: &Arc<Plugin>,
        group: &str,
        params: &[(String, String)],
        limits: SandboxLimits,
    ) -> Result<WasmInstance, StrategyError> {
        let mut instance = self.prepare(plugin, limits)?;
        instance.initialize(group, params)?;
        Ok(instance)
    }

    /// Instantiates `plugin` without calling `init`: the expensive half of making a group's
    /// instance, which can be done ahead of need (see `ResolvedStrategy`'s spares).
    pub fn prepare(
        &self,
        plugin: &Arc<Plugin>,
        limits: SandboxLimits,
    ) -> Result<WasmInstance, StrategyError> {
        let mut store = Store::new(
            &self.inner.engine,
            GuestState {
                // Counts are generous because componentize-py and componentize-js components
                // are made of dozens of core instances and tables; memory is the real bound.
                limits: StoreLimitsBuilder::new()
                    .memory_size(limits.memory_bytes)
                    .trap_on_grow_failure(true)
                    .instances(256)
                    .tables(256)
                    .memories(32)
                    .build(),
                wasi: null_wasi(),
                table: ResourceTable::new(),
                log: PluginLog::new(plugin.origin.clone()),
            },
        );
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_trap();
        // Instantiation is setup, not the message path: the init deadline (`initialize` arms
        // it afresh for `init`).
        arm_store(&mut store, limits.init_deadline_ticks);
        let instantiated = plugin.pre.instantiate(&mut store);
        let guest = instantiated.map_err(|source| {
            if is_interrupt(&source) {
                StrategyError::InitTimeout {
                    origin: plugin.origin.clone(),
                    stage: "instantiate",
                    deadline_ms: limits.init_deadline_ticks,
                }
            } else {
                StrategyError::Load {
                    origin: plugin.origin.clone(),
                    stage: "instantiate",
                    source,
                }
            }
        })?;
        Ok(WasmInstance::new(store, guest, plugin.clone(), limits))
    }
}
