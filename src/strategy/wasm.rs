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

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use wasmtime::component::ResourceTable;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config as EngineConfig, Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::plugin_log::{PluginLevel, PluginLog};
use super::{MemberInfo, MemberLoad, MessageView, Needs, StrategyError};

/// Creates `dir` (and its parents) readable only by the broker's user: a compiled component is
/// native code the broker will run, so no one else may put files there.
/// Refuses an existing compiled-plugin cache directory that someone other than this process's
/// user could have put files into: its files are loaded as native code, unchecked beyond
/// wasmtime's version stamp. A missing directory is fine: it is made 0700 when first written.
pub fn check_cache_dir(dir: &std::path::Path) -> Result<(), StrategyError> {
    let refuse = |reason: String| StrategyError::UnsafeCacheDir {
        path: dir.display().to_string(),
        reason,
    };
    let metadata = match std::fs::metadata(dir) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(refuse(format!("cannot inspect it: {e}"))),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if let Some(reason) =
            cache_dir_problem(metadata.is_dir(), metadata.mode(), metadata.uid(), me)
        {
            return Err(refuse(reason));
        }
    }
    #[cfg(not(unix))]
    if !metadata.is_dir() {
        return Err(refuse("it is not a directory".to_owned()));
    }
    Ok(())
}

/// Why a cache directory of `mode` owned by `owner` is unsafe for user `me`, if it is.
fn cache_dir_problem(is_dir: bool, mode: u32, owner: u32, me: u32) -> Option<String> {
    if !is_dir {
        Some("it is not a directory".to_owned())
    } else if owner != me {
        Some(format!(
            "it is owned by uid {owner}, not by the user sharq runs as (uid {me})"
        ))
    } else if mode & 0o022 != 0 {
        Some(format!(
            "it is writable by group or others (mode {:o})",
            mode & 0o7777
        ))
    } else {
        None
    }
}

fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// `sharq:dispatch@0.1.0` (wit/sharq-dispatch.wit).
mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "strategy",
    });
}

/// `sharq:dispatch@0.2.0` (wit/0.2.0/), in its world with the `log` import: a component of
/// world `strategy` (no imports) links against it just as well.
mod bindings_v2 {
    wasmtime::component::bindgen!({
        path: "wit/0.2.0",
        world: "strategy-with-log",
    });
}

/// A component's contract, linked: the host speaks the version the component exports.
enum Pre {
    V1(bindings::StrategyPre<GuestState>),
    V2(bindings_v2::StrategyWithLogPre<GuestState>),
}

/// An instance's exports, per contract version.
enum Bindings {
    V1(bindings::Strategy),
    V2(bindings_v2::StrategyWithLog),
}

/// Runs `$body` with `$iface` (the instance's `select-member` exports) and `$guest` (the
/// module of its types) for whichever contract version the instance speaks: the two share
/// every call but `msg-meta`'s fields.
macro_rules! on_contract {
    ($bindings:expr, |$iface:ident, $guest:ident| $body:expr) => {
        match $bindings {
            Bindings::V1(b) => {
                #[allow(unused_imports)]
                use bindings::exports::sharq::dispatch::select_member as $guest;
                let $iface = b.sharq_dispatch_select_member();
                $body
            }
            Bindings::V2(b) => {
                #[allow(unused_imports)]
                use bindings_v2::exports::sharq::dispatch::select_member as $guest;
                let $iface = b.sharq_dispatch_select_member();
                $body
            }
        }
    };
}

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
    pre: Pre,
}

impl Plugin {
    /// The contract version the component implements (the host links the newest it exports).
    pub fn contract_version(&self) -> &'static str {
        match self.pre {
            Pre::V1(_) => "0.1.0",
            Pre::V2(_) => "0.2.0",
        }
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

impl bindings_v2::sharq::dispatch::log::Host for GuestState {
    fn log(&mut self, level: bindings_v2::sharq::dispatch::log::Level, message: String) {
        use bindings_v2::sharq::dispatch::log::Level as Guest;
        let level = match level {
            Guest::Error => PluginLevel::Error,
            Guest::Warn => PluginLevel::Warn,
            Guest::Info => PluginLevel::Info,
            Guest::Debug => PluginLevel::Debug,
            Guest::Trace => PluginLevel::Trace,
        };
        self.log.write(level, &message);
    }
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
        // Offered to every component; one that does not import it never sees it.
        bindings_v2::sharq::dispatch::log::add_to_linker::<GuestState, HasSelf<GuestState>>(
            &mut linker,
            |state| state,
        )
        .map_err(fail("link the log import"))?;
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
        // The newest contract the component exports; 0.1.0 components load unchanged.
        let pre = match bindings_v2::StrategyWithLogPre::new(instance_pre.clone()) {
            Ok(pre) => Pre::V2(pre),
            Err(_) => Pre::V1(bindings::StrategyPre::new(instance_pre).map_err(fail(
                "link (does it implement the `strategy` world of sharq:dispatch@0.1.0 or @0.2.0?)",
            ))?),
        };
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

    /// The cache file for a component: its content hash, and the engine's compatibility hash so
    /// that another wasmtime version or configuration never reads it.
    fn cache_path(&self, digest: &[u8; 32]) -> Option<PathBuf> {
        let dir = self.inner.disk_cache.as_ref()?;
        let mut engine_hasher = std::collections::hash_map::DefaultHasher::new();
        self.inner
            .engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hasher);
        let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Some(dir.join(format!("{name}-{:016x}.cwasm", engine_hasher.finish())))
    }

    fn load_cached(&self, digest: &[u8; 32]) -> Option<Component> {
        let path = self.cache_path(digest)?;
        if !path.exists() {
            return None;
        }
        // SAFETY: the file is one this host serialised into the broker's private cache
        // directory under the component's content hash; wasmtime also checks that it was made
        // by a compatible engine and refuses it otherwise.
        match unsafe { Component::deserialize_file(&self.inner.engine, &path) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %format!("{e:#}"), "ignoring unusable compiled-plugin cache file");
                None
            }
        }
    }

    fn store_cached(&self, digest: &[u8; 32], component: &Component) {
        let Some(path) = self.cache_path(digest) else {
            return;
        };
        let written = component
            .serialize()
            .map_err(|e| format!("{e:#}"))
            .and_then(|bytes| {
                if let Some(dir) = path.parent() {
                    create_private_dir(dir).map_err(|e| e.to_string())?;
                }
                // Write then rename, so a concurrent reader never sees half a file. The partial
                // file's name is unique to this writer: brokers (or hosts in one process) that
                // compile the same component at once must not write into one file together.
                static WRITER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let partial = path.with_extension(format!(
                    "{}-{}.partial",
                    std::process::id(),
                    WRITER.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::write(&partial, bytes).map_err(|e| e.to_string())?;
                std::fs::rename(&partial, &path).map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            tracing::warn!(file = %path.display(), error = %e, "cannot write compiled-plugin cache file");
        }
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
        let instantiated = match &plugin.pre {
            Pre::V1(pre) => pre.instantiate(&mut store).map(Bindings::V1),
            Pre::V2(pre) => pre.instantiate(&mut store).map(Bindings::V2),
        };
        let bindings = instantiated.map_err(|source| {
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
        Ok(WasmInstance {
            store,
            bindings,
            plugin: plugin.clone(),
            needs: Needs::default(),
            limits,
            in_setup: true,
        })
    }
}

fn owned_pairs(pairs: &[(ByteString, ByteString)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A trap's one-line cause (`wasm trap: ...`, or the failing host function's error), without
/// the wasm backtrace that `{:#}` would add: that goes to the debug log.
fn trap_summary(e: &wasmtime::Error) -> String {
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => e.root_cause().to_string(),
    }
}

fn is_interrupt(e: &wasmtime::Error) -> bool {
    matches!(
        e.downcast_ref::<wasmtime::Trap>(),
        Some(wasmtime::Trap::Interrupt)
    )
}

/// One group's live guest instance.
pub struct WasmInstance {
    store: Store<GuestState>,
    bindings: Bindings,
    pub plugin: Arc<Plugin>,
    pub needs: Needs,
    limits: SandboxLimits,
    /// Between `begin_setup` and `end_setup` the calls share the setup deadline armed at the
    /// start instead of each getting the per-call one.
    in_setup: bool,
}

impl std::fmt::Debug for WasmInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmInstance")
            .field("plugin", &self.plugin.origin)
            .finish_non_exhaustive()
    }
}

impl WasmInstance {
    fn guest_error(&mut self, e: wasmtime::Error) -> StrategyError {
        if is_interrupt(&e) {
            StrategyError::Timeout {
                origin: self.plugin.origin.clone(),
                deadline_ms: if self.in_setup {
                    self.limits.init_deadline_ticks
                } else {
                    self.limits.deadline_ticks
                },
            }
        } else {
            // A guest without WASI that calls it traps in a function named after the import.
            let calls_wasi = !self.plugin.wasi && format!("{e:#}").contains("wasi:");
            StrategyError::Trap {
                origin: self.plugin.origin.clone(),
                trap: trap_summary(&e),
                last_error: self.store.data_mut().log.take_last_error(),
                source: e,
                calls_wasi,
            }
        }
    }

    /// Arms the deadline for the next call, and forgets the previous call's last error line.
    fn arm(&mut self) {
        if !self.in_setup {
            arm_store(&mut self.store, self.limits.deadline_ticks);
        }
        self.store.data_mut().log.start_call();
    }

    /// Log lines dropped by the rate limit since the last call of this.
    pub fn take_log_dropped(&mut self) -> u64 {
        self.store.data_mut().log.take_dropped()
    }

    /// Starts setting up this instance (replaying membership into it): the calls until
    /// [`WasmInstance::end_setup`] share one init deadline, because a group with many members
    /// replays many calls, and this is not the message path the per-call deadline protects.
    pub fn begin_setup(&mut self) {
        self.in_setup = true;
        arm_store(&mut self.store, self.limits.init_deadline_ticks);
    }

    /// Back to the per-call deadline.
    pub fn end_setup(&mut self) {
        self.in_setup = false;
    }

    /// Calls `init` for `group` on a prepared instance, under the init deadline (armed afresh:
    /// a spare may have waited since it was instantiated).
    pub fn initialize(
        &mut self,
        group: &str,
        params: &[(String, String)],
    ) -> Result<(), StrategyError> {
        self.begin_setup();
        self.store.data_mut().log.set_group(group);
        let limits = self.limits;
        self.needs = self.init(group, params).map_err(|e| match e {
            StrategyError::Timeout { origin, .. } => StrategyError::InitTimeout {
                origin,
                stage: "init",
                deadline_ms: limits.init_deadline_ticks,
            },
            other => other,
        })?;
        self.end_setup();
        Ok(())
    }

    fn init(&mut self, group: &str, params: &[(String, String)]) -> Result<Needs, StrategyError> {
        self.arm();
        let answer = match &self.bindings {
            Bindings::V1(b) => {
                use bindings::exports::sharq::dispatch::select_member::Needs as Flags;
                b.sharq_dispatch_select_member()
                    .call_init(&mut self.store, group, params)
                    .map(|answer| {
                        answer.map(|needs| Needs {
                            topic: needs.contains(Flags::TOPIC),
                            publisher: needs.contains(Flags::PUBLISHER),
                            payload: needs.contains(Flags::PAYLOAD),
                            ..Needs::default()
                        })
                    })
            }
            Bindings::V2(b) => {
                use bindings_v2::exports::sharq::dispatch::select_member::Needs as Flags;
                b.sharq_dispatch_select_member()
                    .call_init(&mut self.store, group, params)
                    .map(|answer| {
                        answer.map(|needs| Needs {
                            topic: needs.contains(Flags::TOPIC),
                            publisher: needs.contains(Flags::PUBLISHER),
                            payload: needs.contains(Flags::PAYLOAD),
                            user_properties: needs.contains(Flags::USER_PROPERTIES),
                            content_type: needs.contains(Flags::CONTENT_TYPE),
                        })
                    })
            }
        }
        .map_err(|e| self.guest_error(e))?;
        match answer {
            Ok(needs) => Ok(needs),
            Err(message) => Err(StrategyError::InitRefused {
                origin: self.plugin.origin.clone(),
                message,
            }),
        }
    }

    pub fn member_joined(&mut self, member: &MemberInfo) -> Result<(), StrategyError> {
        self.arm();
        let client_id = member.client_id.to_string();
        let joined = match &self.bindings {
            Bindings::V1(b) => {
                use bindings::exports::sharq::dispatch::select_member as guest;
                let guest_member = guest::Member {
                    id: member.id,
                    client_id,
                    weight: member.weight,
                    subscribed_at_ms: member.subscribed_at_ms,
                };
                b.sharq_dispatch_select_member()
                    .call_member_joined(&mut self.store, &guest_member)
            }
            Bindings::V2(b) => {
                use bindings_v2::exports::sharq::dispatch::select_member as guest;
                let guest_member = guest::Member {
                    id: member.id,
                    client_id,
                    weight: member.weight,
                    subscribed_at_ms: member.subscribed_at_ms,
                    user_properties: owned_pairs(&member.user_properties),
                };
                b.sharq_dispatch_select_member()
                    .call_member_joined(&mut self.store, &guest_member)
            }
        };
        joined.map_err(|e| self.guest_error(e))
    }

    pub fn member_left(&mut self, id: u64) -> Result<(), StrategyError> {
        self.arm();
        on_contract!(&self.bindings, |iface, guest| iface
            .call_member_left(&mut self.store, id))
        .map_err(|e| self.guest_error(e))
    }

    pub fn member_load(&mut self, id: u64, load: MemberLoad) -> Result<(), StrategyError> {
        self.arm();
        on_contract!(&self.bindings, |iface, guest| iface.call_member_load(
            &mut self.store,
            id,
            load.inflight,
            load.capacity,
            load.online,
        ))
        .map_err(|e| self.guest_error(e))
    }

    /// Asks the guest for a member. Uses `select-full` only when `init` asked for more than the
    /// flat metadata, so the common path copies no strings into the guest.
    pub fn select(&mut self, message: &MessageView<'_>) -> Result<Option<u64>, StrategyError> {
        self.arm();
        let payload_len = u32::try_from(message.payload.len()).unwrap_or(u32::MAX);
        let needs = self.needs;
        let topic = if needs.topic { message.topic } else { "" };
        let publisher = if needs.publisher {
            message.publisher
        } else {
            ""
        };
        let payload = needs.payload.then_some(message.payload);
        let answer = match &self.bindings {
            Bindings::V1(b) => {
                use bindings::exports::sharq::dispatch::select_member as guest;
                let meta = guest::MsgMeta {
                    topic_hash: message.topic_hash,
                    publisher_hash: message.publisher_hash,
                    qos: message.qos,
                    retain: message.retain,
                    payload_len,
                };
                let iface = b.sharq_dispatch_select_member();
                if needs.any() {
                    iface.call_select_full(&mut self.store, topic, publisher, payload, meta)
                } else {
                    iface.call_select(&mut self.store, meta)
                }
            }
            Bindings::V2(b) => {
                use bindings_v2::exports::sharq::dispatch::select_member as guest;
                let meta = guest::MsgMeta {
                    topic_hash: message.topic_hash,
                    publisher_hash: message.publisher_hash,
                    qos: message.qos,
                    retain: message.retain,
                    payload_len,
                    key_hash: message.key_hash,
                };
                let iface = b.sharq_dispatch_select_member();
                if needs.any() {
                    let full = guest::Message {
                        topic: topic.to_owned(),
                        publisher: publisher.to_owned(),
                        payload: payload.map(<[u8]>::to_vec),
                        user_properties: if needs.user_properties {
                            owned_pairs(message.user_properties)
                        } else {
                            Vec::new()
                        },
                        content_type: message
                            .content_type
                            .filter(|_| needs.content_type)
                            .map(str::to_owned),
                    };
                    iface.call_select_full(&mut self.store, &full, meta)
                } else {
                    iface.call_select(&mut self.store, meta)
                }
            }
        };
        answer.map_err(|e| self.guest_error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: SandboxLimits = SandboxLimits {
        memory_bytes: 16 << 20,
        deadline_ticks: 1000,
        init_deadline_ticks: 1000,
    };

    #[test]
    fn disk_cache_survives_a_new_host() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = crate::strategy::builtin::component("round_robin").unwrap();
        let first = WasmHost::with_disk_cache(LIMITS, Some(dir.path().to_path_buf())).unwrap();
        first.load("round_robin", bytes).unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1, "one compiled component cached");

        // A fresh host (a restart) loads the cached file and it works.
        let second = WasmHost::with_disk_cache(LIMITS, Some(dir.path().to_path_buf())).unwrap();
        let plugin = second.load("round_robin", bytes).unwrap();
        let mut instance = second.instantiate(&plugin, "g", &[]).unwrap();
        instance
            .member_joined(&crate::strategy::MemberInfo {
                id: 7,
                client_id: "m".into(),
                weight: 1,
                subscribed_at_ms: 0,
                user_properties: Vec::new(),
            })
            .unwrap();
        instance
            .member_load(
                7,
                crate::strategy::MemberLoad {
                    inflight: 0,
                    capacity: 10,
                    online: true,
                },
            )
            .unwrap();
        let view = crate::strategy::MessageView {
            topic: "t",
            publisher: "p",
            payload: b"",
            topic_hash: 1,
            key_hash: 1,
            publisher_hash: 2,
            qos: 1,
            retain: false,
            user_properties: &[],
            content_type: None,
        };
        assert_eq!(instance.select(&view).unwrap(), Some(7));
    }

    #[test]
    fn a_cache_dir_others_can_write_or_another_user_owns_is_refused() {
        assert_eq!(cache_dir_problem(true, 0o40700, 1000, 1000), None);
        assert_eq!(cache_dir_problem(true, 0o40755, 1000, 1000), None);
        let group = cache_dir_problem(true, 0o40775, 1000, 1000).unwrap();
        assert!(
            group.contains("writable by group or others (mode 775)"),
            "{group}"
        );
        assert!(cache_dir_problem(true, 0o41777, 1000, 1000).is_some());
        let owner = cache_dir_problem(true, 0o40700, 0, 1000).unwrap();
        assert!(owner.contains("owned by uid 0"), "{owner}");
        assert!(cache_dir_problem(false, 0o100600, 1000, 1000).is_some());

        let dir = tempfile::tempdir().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
            let err = WasmHost::with_disk_cache(LIMITS, Some(dir.path().to_path_buf()))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("shared.plugin_cache_dir") && err.contains("mode 777"),
                "{err}"
            );
        }
        // Not there yet: made private when first written.
        assert!(WasmHost::with_disk_cache(LIMITS, Some(dir.path().join("new"))).is_ok());
    }

    #[test]
    fn corrupt_cache_file_is_ignored_and_recompiled() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = crate::strategy::builtin::component("round_robin").unwrap();
        let host = WasmHost::with_disk_cache(LIMITS, Some(dir.path().to_path_buf())).unwrap();
        host.load("round_robin", bytes).unwrap();
        let cached = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::write(&cached, b"not a compiled component").unwrap();
        let fresh = WasmHost::with_disk_cache(LIMITS, Some(dir.path().to_path_buf())).unwrap();
        assert!(fresh.load("round_robin", bytes).is_ok());
    }
}
