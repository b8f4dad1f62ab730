//! The WebAssembly host: one wasmtime `Engine`, compiled plugins cached by content hash, and one
//! sandboxed instance per shared group.
//!
//! Every call into a guest runs synchronously under the group's lock with an epoch deadline (a
//! background thread ticks the engine's epoch every millisecond), in a store whose memory is
//! capped. Guests get no capabilities: any import a component declares (a Rust `wasm32-wasip2`
//! guest imports WASI it never calls) is linked to a function that traps.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config as EngineConfig, Engine, Store, StoreLimits, StoreLimitsBuilder};

use super::{MemberInfo, MemberLoad, MessageView, Needs, StrategyError};

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "strategy",
    });
}

use bindings::exports::sharq::dispatch::select_member as guest;

/// How long one engine epoch lasts; deadlines are counted in these.
const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Limits applied to every guest instance.
#[derive(Debug, Clone, Copy)]
pub struct SandboxLimits {
    /// Linear memory a guest may grow to, in bytes.
    pub memory_bytes: usize,
    /// Epoch ticks (milliseconds) one call may run before it is interrupted.
    pub deadline_ticks: u64,
}

/// A compiled plugin, ready to instantiate cheaply for any number of groups.
pub struct Plugin {
    /// Where it came from (a built-in's name or a file path), for logs.
    pub origin: String,
    /// SHA-256 of the component bytes: the cache key, and how a reload tells "unchanged".
    pub digest: [u8; 32],
    pre: bindings::StrategyPre<GuestState>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// Per-instance host state: only the resource limiter, since guests import nothing.
pub struct GuestState {
    limits: StoreLimits,
}

/// The shared engine. Cheap to clone.
#[derive(Clone)]
pub struct WasmHost {
    inner: Arc<HostInner>,
}

struct HostInner {
    engine: Engine,
    limits: SandboxLimits,
    compiled: Mutex<HashMap<[u8; 32], Arc<Plugin>>>,
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
        let mut config = EngineConfig::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| StrategyError::Engine(format!("{e:#}")))?;
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
            .map_err(|e| StrategyError::Engine(format!("cannot start the epoch ticker: {e}")))?;
        Ok(WasmHost {
            inner: Arc::new(HostInner {
                engine,
                limits,
                compiled: Mutex::new(HashMap::new()),
                stop,
            }),
        })
    }

    pub fn limits(&self) -> SandboxLimits {
        self.inner.limits
    }

    /// Compiles and links a component, or returns the cached compilation of identical bytes.
    /// Slow (milliseconds to seconds): call it off the hot path.
    pub fn load(&self, origin: &str, bytes: &[u8]) -> Result<Arc<Plugin>, StrategyError> {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        if let Some(plugin) = self.inner.compiled.lock().get(&digest) {
            return Ok(plugin.clone());
        }
        let fail = |stage: &'static str| {
            let origin = origin.to_owned();
            move |e: wasmtime::Error| StrategyError::Load {
                origin: origin.clone(),
                stage,
                cause: format!("{e:#}"),
            }
        };
        let component = Component::new(&self.inner.engine, bytes).map_err(fail("compile"))?;
        let mut linker: Linker<GuestState> = Linker::new(&self.inner.engine);
        // No capabilities: every import, WASI included, traps if it is ever called.
        linker
            .define_unknown_imports_as_traps(&component)
            .map_err(fail("link"))?;
        let instance_pre = linker.instantiate_pre(&component).map_err(fail("link"))?;
        let pre = bindings::StrategyPre::new(instance_pre)
            .map_err(fail("link (does it implement the `strategy` world?)"))?;
        let plugin = Arc::new(Plugin {
            origin: origin.to_owned(),
            digest,
            pre,
        });
        self.inner.compiled.lock().insert(digest, plugin.clone());
        Ok(plugin)
    }

    /// Instantiates `plugin` for one group and calls its `init`.
    pub fn instantiate(
        &self,
        plugin: &Arc<Plugin>,
        group: &str,
        params: &[(String, String)],
    ) -> Result<WasmInstance, StrategyError> {
        let limits = self.inner.limits;
        let mut store = Store::new(
            &self.inner.engine,
            GuestState {
                limits: StoreLimitsBuilder::new()
                    .memory_size(limits.memory_bytes)
                    .trap_on_grow_failure(true)
                    .instances(16)
                    .tables(16)
                    .memories(4)
                    .build(),
            },
        );
        store.limiter(|state| &mut state.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(limits.deadline_ticks);
        let bindings = plugin
            .pre
            .instantiate(&mut store)
            .map_err(|e| StrategyError::Load {
                origin: plugin.origin.clone(),
                stage: "instantiate",
                cause: format!("{e:#}"),
            })?;
        let mut instance = WasmInstance {
            store,
            bindings,
            plugin: plugin.clone(),
            needs: Needs::default(),
            deadline_ticks: limits.deadline_ticks,
        };
        instance.needs = instance.init(group, params)?;
        Ok(instance)
    }
}

/// One group's live guest instance.
pub struct WasmInstance {
    store: Store<GuestState>,
    bindings: bindings::Strategy,
    pub plugin: Arc<Plugin>,
    pub needs: Needs,
    deadline_ticks: u64,
}

impl std::fmt::Debug for WasmInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmInstance")
            .field("plugin", &self.plugin.origin)
            .finish_non_exhaustive()
    }
}

impl WasmInstance {
    fn guest_error(&self, e: wasmtime::Error) -> StrategyError {
        let cause = format!("{e:#}");
        if matches!(
            e.downcast_ref::<wasmtime::Trap>(),
            Some(wasmtime::Trap::Interrupt)
        ) {
            StrategyError::Timeout {
                origin: self.plugin.origin.clone(),
            }
        } else {
            StrategyError::Trap {
                origin: self.plugin.origin.clone(),
                cause,
            }
        }
    }

    /// Arms the deadline for the next call.
    fn arm(&mut self) {
        self.store.set_epoch_deadline(self.deadline_ticks);
    }

    fn init(&mut self, group: &str, params: &[(String, String)]) -> Result<Needs, StrategyError> {
        self.arm();
        let answer = self
            .bindings
            .sharq_dispatch_select_member()
            .call_init(&mut self.store, group, params)
            .map_err(|e| self.guest_error(e))?;
        match answer {
            Ok(needs) => Ok(Needs {
                topic: needs.contains(guest::Needs::TOPIC),
                publisher: needs.contains(guest::Needs::PUBLISHER),
                payload: needs.contains(guest::Needs::PAYLOAD),
            }),
            Err(message) => Err(StrategyError::InitRefused {
                origin: self.plugin.origin.clone(),
                message,
            }),
        }
    }

    pub fn member_joined(&mut self, member: &MemberInfo) -> Result<(), StrategyError> {
        self.arm();
        let guest_member = guest::Member {
            id: member.id,
            client_id: member.client_id.to_string(),
            weight: member.weight,
            subscribed_at_ms: member.subscribed_at_ms,
        };
        self.bindings
            .sharq_dispatch_select_member()
            .call_member_joined(&mut self.store, &guest_member)
            .map_err(|e| self.guest_error(e))
    }

    pub fn member_left(&mut self, id: u64) -> Result<(), StrategyError> {
        self.arm();
        self.bindings
            .sharq_dispatch_select_member()
            .call_member_left(&mut self.store, id)
            .map_err(|e| self.guest_error(e))
    }

    pub fn member_load(&mut self, id: u64, load: MemberLoad) -> Result<(), StrategyError> {
        self.arm();
        self.bindings
            .sharq_dispatch_select_member()
            .call_member_load(
                &mut self.store,
                id,
                load.inflight,
                load.capacity,
                load.online,
            )
            .map_err(|e| self.guest_error(e))
    }

    /// Asks the guest for a member. Uses `select-full` only when `init` asked for more than the
    /// flat metadata, so the common path copies no strings into the guest.
    pub fn select(&mut self, message: &MessageView<'_>) -> Result<Option<u64>, StrategyError> {
        self.arm();
        let meta = guest::MsgMeta {
            topic_hash: message.topic_hash,
            publisher_hash: message.publisher_hash,
            qos: message.qos,
            retain: message.retain,
            payload_len: u32::try_from(message.payload.len()).unwrap_or(u32::MAX),
        };
        let interface = self.bindings.sharq_dispatch_select_member();
        let answer = if self.needs.any() {
            let topic = if self.needs.topic { message.topic } else { "" };
            let publisher = if self.needs.publisher {
                message.publisher
            } else {
                ""
            };
            let payload = self.needs.payload.then_some(message.payload);
            interface.call_select_full(&mut self.store, topic, publisher, payload, meta)
        } else {
            interface.call_select(&mut self.store, meta)
        };
        answer.map_err(|e| self.guest_error(e))
    }
}
