//! The broker's clock-driven background work, each task ending at shutdown: the groups' sweep
//! (ack deadlines, message ages) and the `$SYS` publisher. Timers armed by the business itself
//! (a session's expiry, a delayed will, a lingering group) are armed where it happens, in
//! `broker/`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::MissedTickBehavior;

use crate::broker::{sys, BrokerState};

/// How often groups' ack deadlines and message ages are checked: a deadline is met to within
/// this.
const SWEEP_INTERVAL: Duration = Duration::from_millis(20);

/// Starts the `$SYS` publisher (if `server.sys_interval_secs` is set) and the groups' sweep.
pub(super) fn spawn(state: &Arc<BrokerState>) {
    if state.config.server.sys_interval_secs > 0 {
        tokio::spawn(publish_sys(state.clone()));
    }
    tokio::spawn(sweep_groups(state.clone()));
}

/// Publishes the `$SYS` topics every `server.sys_interval_secs` until shutdown.
async fn publish_sys(broker: Arc<BrokerState>) {
    let mut ticker =
        tokio::time::interval(Duration::from_secs(broker.config.server.sys_interval_secs));
    loop {
        tokio::select! {
            _ = broker.shutdown.cancelled() => return,
            _ = ticker.tick() => sys::publish_all(&broker),
        }
    }
}

/// Runs the groups' clock-driven work (ack deadlines, `max_age_secs`) until shutdown.
async fn sweep_groups(broker: Arc<BrokerState>) {
    let mut ticker = tokio::time::interval(SWEEP_INTERVAL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = broker.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        broker.sweep_groups(Instant::now());
    }
}
