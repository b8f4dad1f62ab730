//! Which strategy each group uses: the `[shared]` config resolved into compiled plugins, and
//! the reload that swaps them while messages flow.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use globset::{Glob, GlobMatcher};
use parking_lot::{Mutex, RwLock};

use crate::config::{GroupStrategyConfig, QueueConfig, SharedConfig};

use super::host::{Plugin, SandboxLimits, WasmHost, WasmInstance};
use super::{builtin, StrategyError};

/// A strategy ready to instantiate: compiled plugin plus the params its groups get.
pub struct ResolvedStrategy {
    /// Name for logs: the built-in's name, or the plugin file path.
    pub label: String,
    host: WasmHost,
    plugin: Arc<Plugin>,
    params: Vec<(String, String)>,
    /// This strategy's own memory and deadline (a group rule may override the defaults).
    limits: SandboxLimits,
    pub max_failures: u32,
    /// Instances made ahead of need (instantiated, `init` not yet called), so that a new group
    /// costs a pop and its `init` rather than an instantiation. A leaf lock, held for a push or
    /// a pop; instantiation itself happens outside it, on a blocking thread.
    spares: Mutex<Vec<WasmInstance>>,
    /// Set while a refill of `spares` is under way, so there is at most one.
    refilling: AtomicBool,
}

/// Spare instances kept per strategy: enough for a burst of new groups while the refill runs,
/// few enough that Python and JavaScript guests (tens of MiB each) stay affordable.
const SPARE_INSTANCES: usize = 2;

impl std::fmt::Debug for ResolvedStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedStrategy")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl ResolvedStrategy {
    fn new(
        label: String,
        host: WasmHost,
        plugin: Arc<Plugin>,
        params: Vec<(String, String)>,
        options: PluginOptions,
    ) -> ResolvedStrategy {
        ResolvedStrategy {
            label,
            host,
            plugin,
            params,
            limits: options.limits,
            max_failures: options.max_failures,
            spares: Mutex::new(Vec::new()),
            refilling: AtomicBool::new(false),
        }
    }

    /// An `init`-ed instance for `group`: a spare when there is one, and the spares are
    /// topped up in the background.
    pub fn instantiate(self: &Arc<Self>, group: &str) -> Result<WasmInstance, StrategyError> {
        let spare = self.spares.lock().pop();
        let mut instance = match spare {
            Some(instance) => instance,
            None => self.host.prepare(&self.plugin, self.limits)?,
        };
        instance.initialize(group, &self.params)?;
        self.refill_spares();
        Ok(instance)
    }

    /// Tops the spares up on a blocking thread of the current runtime (none outside one:
    /// `plugin check` and unit tests instantiate as they go).
    fn refill_spares(self: &Arc<Self>) {
        if self.spares.lock().len() >= SPARE_INSTANCES
            || self.refilling.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.refilling.store(false, Ordering::Release);
            return;
        };
        let strategy = self.clone();
        runtime.spawn_blocking(move || {
            while strategy.spares.lock().len() < SPARE_INSTANCES {
                match strategy.host.prepare(&strategy.plugin, strategy.limits) {
                    Ok(instance) => strategy.spares.lock().push(instance),
                    Err(e) => {
                        tracing::warn!(strategy = %strategy.label, error = %e, "cannot prepare a spare strategy instance");
                        break;
                    }
                }
            }
            strategy.refilling.store(false, Ordering::Release);
        });
    }

    /// The component's version as `/metrics` and the API show it: the start of its SHA-256,
    /// which changes with every rebuild of the plugin.
    pub fn version(&self) -> String {
        self.plugin.digest[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Same component bytes, params, WASI grant and limits: a reload need not touch groups
    /// using it.
    pub fn same_as(&self, other: &ResolvedStrategy) -> bool {
        self.plugin.digest == other.plugin.digest
            && self.plugin.wasi == other.plugin.wasi
            && self.params == other.params
            && self.limits == other.limits
    }
}

/// How one group rule's plugin is sandboxed.
#[derive(Debug, Clone, Copy)]
struct PluginOptions {
    wasi: bool,
    limits: SandboxLimits,
    max_failures: u32,
}

/// One `[[shared.groups]]` rule, resolved.
struct Rule {
    pattern: String,
    matcher: GlobMatcher,
    /// `None`: the native round robin.
    strategy: Option<Arc<ResolvedStrategy>>,
    /// The rule's work-queue settings, as the config wrote them; the broker turns them into
    /// its own form, so that strategy resolution knows nothing of how a queue runs.
    queue: QueueConfig,
}

struct Rules {
    default: Option<Arc<ResolvedStrategy>>,
    groups: Vec<Rule>,
}

/// The live strategy configuration.
pub struct StrategyRegistry {
    host: WasmHost,
    rules: RwLock<Rules>,
    /// Strategies set for one share name through the admin API: they win over the config's
    /// rules, across reloads, until cleared (or the broker restarts). A leaf lock, like
    /// `rules`, held for a lookup or a replacement.
    overrides: RwLock<HashMap<String, Option<Arc<ResolvedStrategy>>>>,
}

impl std::fmt::Debug for StrategyRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StrategyRegistry").finish_non_exhaustive()
    }
}

impl StrategyRegistry {
    /// Builds every configured strategy; any failure is an error naming the key and the cause.
    pub fn new(
        config: &SharedConfig,
        base_dir: Option<&Path>,
    ) -> Result<StrategyRegistry, StrategyError> {
        let limits = SandboxLimits::from_mib_and_ms(
            config.plugin_memory_mib,
            config.plugin_deadline_ms,
            config.plugin_init_deadline_ms,
        );
        let cache_dir = match config.plugin_cache_dir.as_deref() {
            None => default_cache_dir(),
            Some(dir) if dir.as_os_str().is_empty() => None,
            Some(dir) => Some(resolve_path(dir, base_dir)),
        };
        let host = WasmHost::with_disk_cache(limits, cache_dir)?;
        let rules = build_rules(&host, config, base_dir)?;
        Ok(StrategyRegistry {
            host,
            rules: RwLock::new(rules),
            overrides: RwLock::default(),
        })
    }

    pub fn host(&self) -> &WasmHost {
        &self.host
    }

    /// The strategy for a group name: the first matching rule, else the default.
    pub fn resolve(&self, group: &str) -> Option<Arc<ResolvedStrategy>> {
        if let Some(strategy) = self.overrides.read().get(group) {
            return strategy.clone();
        }
        let rules = self.rules.read();
        rules
            .groups
            .iter()
            .find(|rule| rule.pattern == group || rule.matcher.is_match(group))
            .map_or_else(|| rules.default.clone(), |rule| rule.strategy.clone())
    }

    /// The work-queue settings of share name `group`, as its first matching rule writes them;
    /// none set when no rule matches.
    pub fn queue_config(&self, group: &str) -> QueueConfig {
        let rules = self.rules.read();
        rules
            .groups
            .iter()
            .find(|rule| rule.pattern == group || rule.matcher.is_match(group))
            .map(|rule| rule.queue.clone())
            .unwrap_or_default()
    }

    /// Sets the strategy of share name `rule.name` (taken as a name, not a glob) from now on,
    /// over the config's rules. Compiled and initialised first: on failure nothing changes.
    /// Blocking.
    pub fn set_override(
        &self,
        rule: &GroupStrategyConfig,
        config: &SharedConfig,
        base_dir: Option<&Path>,
    ) -> Result<(), StrategyError> {
        let strategy = resolve_strategy(&self.host, rule, base_dir, config)?;
        self.overrides.write().insert(rule.name.clone(), strategy);
        Ok(())
    }

    /// Gives share name `group` back to the config's rules; false if it had no override.
    pub fn clear_override(&self, group: &str) -> bool {
        self.overrides.write().remove(group).is_some()
    }

    /// Whether `group`'s strategy was set through the admin API.
    pub fn is_overridden(&self, group: &str) -> bool {
        self.overrides.read().contains_key(group)
    }

    /// Replaces the rules from a new `[shared]` config. Compiles off the caller's thread is the
    /// caller's job (this is blocking). On any failure the old rules stay and the error is
    /// returned (one line naming the file and the cause).
    pub fn reload(
        &self,
        config: &SharedConfig,
        base_dir: Option<&Path>,
    ) -> Result<(), StrategyError> {
        let rules = build_rules(&self.host, config, base_dir)?;
        *self.rules.write() = rules;
        Ok(())
    }
}

fn build_rules(
    host: &WasmHost,
    config: &SharedConfig,
    base_dir: Option<&Path>,
) -> Result<Rules, StrategyError> {
    let defaults = PluginOptions {
        wasi: false,
        limits: host.limits(),
        max_failures: config.plugin_max_failures,
    };
    let default = resolve_named(host, &config.default_strategy, &[], defaults)?;
    let mut groups = Vec::with_capacity(config.groups.len());
    for entry in &config.groups {
        groups.push(resolve_rule(host, entry, base_dir, config)?);
    }
    Ok(Rules { default, groups })
}

fn resolve_rule(
    host: &WasmHost,
    entry: &GroupStrategyConfig,
    base_dir: Option<&Path>,
    config: &SharedConfig,
) -> Result<Rule, StrategyError> {
    let matcher = Glob::new(&entry.name)
        .map_err(|source| StrategyError::Glob {
            pattern: entry.name.clone(),
            source,
        })?
        .compile_matcher();
    Ok(Rule {
        pattern: entry.name.clone(),
        matcher,
        strategy: resolve_strategy(host, entry, base_dir, config)?,
        queue: entry.queue_config(),
    })
}

/// The strategy one rule names, compiled and proven to initialise; `None` for the native
/// round robin.
fn resolve_strategy(
    host: &WasmHost,
    entry: &GroupStrategyConfig,
    base_dir: Option<&Path>,
    config: &SharedConfig,
) -> Result<Option<Arc<ResolvedStrategy>>, StrategyError> {
    let params = entry.params_as_strings();
    let options = PluginOptions {
        wasi: entry.wasi,
        limits: SandboxLimits::from_mib_and_ms(
            entry.memory_mib.unwrap_or(config.plugin_memory_mib),
            entry.deadline_ms.unwrap_or(config.plugin_deadline_ms),
            entry
                .init_deadline_ms
                .unwrap_or(config.plugin_init_deadline_ms),
        ),
        max_failures: config.plugin_max_failures,
    };
    let strategy = match (&entry.strategy, &entry.plugin) {
        (Some(name), _) => resolve_named(host, name, &params, options)?,
        (None, Some(path)) => {
            let path = resolve_path(path, base_dir);
            let bytes = std::fs::read(&path).map_err(|source| StrategyError::Read {
                path: path.display().to_string(),
                source,
            })?;
            let label = path.display().to_string();
            Some(resolve_bytes(host, &label, &bytes, params, options)?)
        }
        // A rule that sets only work-queue settings keeps the default strategy.
        (None, None) => resolve_named(host, &config.default_strategy, &[], options)?,
    };
    Ok(strategy)
}

fn resolve_named(
    host: &WasmHost,
    name: &str,
    params: &[(String, String)],
    options: PluginOptions,
) -> Result<Option<Arc<ResolvedStrategy>>, StrategyError> {
    if name == builtin::NATIVE_ROUND_ROBIN {
        return Ok(None);
    }
    let bytes =
        builtin::component(name).ok_or_else(|| StrategyError::UnknownBuiltin(name.to_owned()))?;
    // Built-ins are Rust guests: they never need WASI.
    let options = PluginOptions {
        wasi: false,
        ..options
    };
    Ok(Some(resolve_bytes(
        host,
        name,
        bytes,
        params.to_vec(),
        options,
    )?))
}

/// Compiles, then proves the plugin links and accepts its params by instantiating it once for a
/// probe group, so a broken plugin is refused at load time rather than when a group needs it.
fn resolve_bytes(
    host: &WasmHost,
    label: &str,
    bytes: &[u8],
    params: Vec<(String, String)>,
    options: PluginOptions,
) -> Result<Arc<ResolvedStrategy>, StrategyError> {
    let plugin = host.load_with(label, bytes, options.wasi)?;
    host.instantiate_limited(&plugin, "$probe", &params, options.limits)?;
    let options = PluginOptions {
        max_failures: options.max_failures.max(1),
        ..options
    };
    Ok(Arc::new(ResolvedStrategy::new(
        label.to_owned(),
        host.clone(),
        plugin,
        params,
        options,
    )))
}

/// Where compiled plugins are cached when the config does not say: the user's cache directory
/// (`$XDG_CACHE_HOME/sharq/plugins`, else `$HOME/.cache/sharq/plugins`), so that restarting a
/// broker with a Python or JavaScript strategy takes milliseconds instead of seconds without
/// any setup. `None` (memory only) when neither variable is set.
pub fn default_cache_dir() -> Option<PathBuf> {
    cache_dir_under(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
}

fn cache_dir_under(
    xdg_cache_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    let base = xdg_cache_home
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            home.filter(|dir| !dir.is_empty())
                .map(|home| PathBuf::from(home).join(".cache"))
        })?;
    Some(base.join("sharq").join("plugins"))
}

pub fn resolve_path(path: &Path, base_dir: Option<&Path>) -> PathBuf {
    match base_dir {
        Some(base) if path.is_relative() => base.join(path),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    #[test]
    fn default_cache_dir_prefers_xdg_then_home_and_needs_one() {
        let under = |xdg: Option<&str>, home: Option<&str>| {
            super::cache_dir_under(xdg.map(Into::into), home.map(Into::into))
        };
        assert_eq!(
            under(Some("/x"), Some("/h")),
            Some(PathBuf::from("/x/sharq/plugins"))
        );
        assert_eq!(
            under(Some(""), Some("/h")),
            Some(PathBuf::from("/h/.cache/sharq/plugins"))
        );
        assert_eq!(under(None, Some("")), None);
        assert_eq!(under(None, None), None);
    }
}
