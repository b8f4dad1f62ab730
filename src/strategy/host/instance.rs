//! One group's live guest instance: the deadline armed before each call, and a failed call
//! turned into a [`StrategyError`]. What each call sends is the contract version's business
//! ([`GuestApi`]); nothing here depends on the version.

use std::sync::Arc;

use wasmtime::Store;

use super::contract::GuestApi;
use super::{arm_store, GuestState, Plugin, SandboxLimits};
use crate::strategy::{MemberInfo, MemberLoad, MessageView, Needs, StrategyError};

/// One group's live guest instance.
pub struct WasmInstance {
    store: Store<GuestState>,
    guest: Box<dyn GuestApi>,
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

/// A trap's one-line cause (`wasm trap: ...`, or the failing host function's error), without
/// the wasm backtrace that `{:#}` would add: that goes to the debug log.
fn trap_summary(e: &wasmtime::Error) -> String {
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => e.root_cause().to_string(),
    }
}

pub(super) fn is_interrupt(e: &wasmtime::Error) -> bool {
    matches!(
        e.downcast_ref::<wasmtime::Trap>(),
        Some(wasmtime::Trap::Interrupt)
    )
}

impl WasmInstance {
    /// A freshly instantiated guest, `init` not called yet, still under the setup deadline
    /// instantiation ran with.
    pub(super) fn new(
        store: Store<GuestState>,
        guest: Box<dyn GuestApi>,
        plugin: Arc<Plugin>,
        limits: SandboxLimits,
    ) -> WasmInstance {
        WasmInstance {
            store,
            guest,
            plugin,
            needs: Needs::default(),
            limits,
            in_setup: true,
        }
    }

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
        let answer = self
            .guest
            .init(&mut self.store, group, params)
            .map_err(|e| self.guest_error(e))?;
        answer.map_err(|message| StrategyError::InitRefused {
            origin: self.plugin.origin.clone(),
            message,
        })
    }

    pub fn member_joined(&mut self, member: &MemberInfo) -> Result<(), StrategyError> {
        self.arm();
        self.guest
            .member_joined(&mut self.store, member)
            .map_err(|e| self.guest_error(e))
    }

    pub fn member_left(&mut self, id: u64) -> Result<(), StrategyError> {
        self.arm();
        self.guest
            .member_left(&mut self.store, id)
            .map_err(|e| self.guest_error(e))
    }

    pub fn member_load(&mut self, id: u64, load: MemberLoad) -> Result<(), StrategyError> {
        self.arm();
        self.guest
            .member_load(&mut self.store, id, load)
            .map_err(|e| self.guest_error(e))
    }

    /// Asks the guest for a member. Uses `select-full` only when `init` asked for more than the
    /// flat metadata, so the common path copies no strings into the guest.
    pub fn select(&mut self, message: &MessageView<'_>) -> Result<Option<u64>, StrategyError> {
        self.arm();
        self.guest
            .select(&mut self.store, message, self.needs)
            .map_err(|e| self.guest_error(e))
    }
}
