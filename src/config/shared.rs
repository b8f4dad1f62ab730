//! `[shared]`: shared subscriptions. Group queue bounds, the strategy sandbox, per-group rules
//! (`[[shared.groups]]`), declared groups (`[[shared.declared]]`) and how long an empty group
//! lingers.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::queue::with_queue_keys;
use super::{Invalid, QueueConfig};

/// The broker's default sandbox for strategy plugins (`shared.plugin_memory_mib`,
/// `shared.plugin_deadline_ms`, `shared.plugin_init_deadline_ms`). `sharq plugin check` and
/// `sharq plugin test` default to them too, so a component is tried under the limits it will
/// run with.
pub const DEFAULT_PLUGIN_MEMORY_MIB: u32 = 16;
pub const DEFAULT_PLUGIN_DEADLINE_MS: u64 = 20;
pub const DEFAULT_PLUGIN_INIT_DEADLINE_MS: u64 = 1000;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SharedConfig {
    /// Messages a shared group keeps while none of its members can take them.
    pub group_queue_max_messages: usize,
    /// Bytes a shared group keeps while none of its members can take them, counted over whole
    /// messages: topic, payload and every property.
    pub group_queue_max_bytes: usize,
    /// The strategy of groups no `[[shared.groups]]` rule matches: a built-in name, or
    /// `native_round_robin` for the non-Wasm round robin.
    pub default_strategy: String,
    /// Linear memory one strategy instance may use.
    pub plugin_memory_mib: u32,
    /// How long one call into a strategy may run before it is interrupted.
    pub plugin_deadline_ms: u64,
    /// How long instantiating a strategy and its `init` (and replaying membership into a new
    /// instance) may run: off the message path, and slower than a call on a loaded host.
    pub plugin_init_deadline_ms: u64,
    /// Failures in a row after which a group stays on the native round robin until a reload.
    pub plugin_max_failures: u32,
    /// A directory (private to the broker) where compiled plugins are cached across restarts.
    /// Unset: the user's cache directory (`$XDG_CACHE_HOME/sharq/plugins`, else
    /// `~/.cache/sharq/plugins`); `""` keeps the cache in memory only.
    pub plugin_cache_dir: Option<PathBuf>,
    /// The directory a plugin path given through the admin API must lie in (relative paths
    /// there are relative to it). Unset: the API refuses plugin paths, built-ins only.
    pub plugin_dir: Option<PathBuf>,
    /// Per-group strategies; the first rule whose `name` (exact, or a glob such as `orders-*`)
    /// matches the share name wins.
    pub groups: Vec<GroupStrategyConfig>,
    /// Also read HiveMQ 3's `$share:{group}:{filter}` as `$share/{group}/{filter}`. Off, it is
    /// an ordinary filter, as standard MQTT says.
    pub legacy_colon_syntax: bool,
    /// How long a group whose last member left keeps its queue and goes on collecting matching
    /// messages before it ends, so that a member joining meanwhile (the next worker of a
    /// rolling restart) finds them; 0 ends it at once. Declared groups never end this way.
    pub group_linger_secs: u64,
    /// Groups that exist from start-up, whether or not anyone is a member: they collect
    /// matching messages before their first member joins and after their last one leaves.
    pub declared: Vec<DeclaredGroupConfig>,
}

impl Default for SharedConfig {
    fn default() -> Self {
        SharedConfig {
            group_queue_max_messages: 100_000,
            group_queue_max_bytes: 256 * 1024 * 1024,
            default_strategy: "round_robin".to_owned(),
            plugin_memory_mib: DEFAULT_PLUGIN_MEMORY_MIB,
            plugin_deadline_ms: DEFAULT_PLUGIN_DEADLINE_MS,
            plugin_init_deadline_ms: DEFAULT_PLUGIN_INIT_DEADLINE_MS,
            plugin_max_failures: 5,
            plugin_cache_dir: None,
            plugin_dir: None,
            groups: Vec::new(),
            legacy_colon_syntax: false,
            group_linger_secs: 60,
            declared: Vec::new(),
        }
    }
}

/// Writes a table struct with its own fields followed by the work-queue keys (each optional in
/// the file), and its `queue_config()`.
macro_rules! with_own_fields {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$field_meta:meta])* pub $field:ident: $field_ty:ty, )*
        }
        queue_keys { $( $(#[$key_doc:meta])* $key:ident: $key_ty:ty, )* }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[$field_meta])* pub $field: $field_ty, )*
            $( $(#[$key_doc])* #[serde(default)] pub $key: $key_ty, )*
        }

        impl $name {
            /// The work-queue settings this entry makes.
            pub fn queue_config(&self) -> QueueConfig {
                QueueConfig {
                    $( $key: Clone::clone(&self.$key), )*
                }
            }
        }
    };
}

with_queue_keys!(with_own_fields! {
    /// One `[[shared.declared]]` entry: the group `$share/{name}/{filter}` (`$queue/{filter}` is
    /// the name `$queue`).
    #[derive(Debug, Clone, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    pub struct DeclaredGroupConfig {
        /// The share name: non-empty, without `/`, `+` or `#`.
        pub name: String,
        /// The topic filter the group's members subscribe with after the share name.
        pub filter: String,
    }
});

with_queue_keys!(with_own_fields! {
    /// One `[[shared.groups]]` rule: a group's strategy, its sandbox, and its work-queue
    /// settings.
    #[derive(Debug, Clone, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    pub struct GroupStrategyConfig {
        /// The share name, or a glob over share names.
        pub name: String,
        /// A built-in strategy name.
        pub strategy: Option<String>,
        /// A strategy component file (relative paths are relative to the config file).
        pub plugin: Option<PathBuf>,
        /// Handed to the strategy's `init`; values may be strings, numbers or booleans.
        #[serde(default)]
        pub params: BTreeMap<String, toml::Value>,
        /// Serve the plugin's WASI imports from a context that grants nothing (no files, env,
        /// network or stdio; clocks and random only). Python and JavaScript components need it;
        /// without it, a component importing WASI clocks, random, files or sockets is refused.
        #[serde(default)]
        pub wasi: bool,
        /// This plugin's memory limit, overriding `shared.plugin_memory_mib` (Python and
        /// JavaScript runtimes need tens of MiB).
        pub memory_mib: Option<u32>,
        /// This plugin's per-call deadline, overriding `shared.plugin_deadline_ms`.
        pub deadline_ms: Option<u64>,
        /// This plugin's instantiate + `init` deadline, overriding
        /// `shared.plugin_init_deadline_ms`.
        pub init_deadline_ms: Option<u64>,
    }
});

impl GroupStrategyConfig {
    /// Params as the WIT contract passes them: strings.
    pub fn params_as_strings(&self) -> Vec<(String, String)> {
        self.params
            .iter()
            .map(|(key, value)| {
                let text = match value {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (key.clone(), text)
            })
            .collect()
    }

    /// Checks one rule's strategy and sandbox keys (not its work-queue keys: those are named
    /// by the rule's index).
    fn validate(&self) -> Result<(), Invalid> {
        match (&self.strategy, &self.plugin) {
            (Some(_), Some(_)) => {
                return Err(Invalid::new(
                    "shared.groups",
                    format!(
                        "group `{}` sets both `strategy` and `plugin`; choose one",
                        self.name
                    ),
                ))
            }
            // Only work-queue settings: the group keeps the default strategy.
            (None, None) if !self.queue_config().is_default() => {}
            (None, None) => {
                return Err(Invalid::new(
                    "shared.groups",
                    format!(
                        "group `{}` needs `strategy` or `plugin` (or work-queue settings only)",
                        self.name
                    ),
                ))
            }
            _ => {}
        }
        for (key, value) in [
            ("shared.groups.memory_mib", self.memory_mib.map(u64::from)),
            ("shared.groups.deadline_ms", self.deadline_ms),
            ("shared.groups.init_deadline_ms", self.init_deadline_ms),
        ] {
            if value == Some(0) {
                return Err(Invalid::new(
                    key,
                    format!("group `{}`: must be at least 1", self.name),
                ));
            }
        }
        for (key, value) in &self.params {
            if matches!(value, toml::Value::Array(_) | toml::Value::Table(_)) {
                return Err(Invalid::new(
                    "shared.groups.params",
                    format!(
                        "group `{}` param `{key}` must be a string, number or boolean",
                        self.name
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl SharedConfig {
    /// `max_topic_levels` (`limits.max_topic_levels`) bounds a declared group's filter.
    pub(super) fn validate(&self, max_topic_levels: usize) -> Result<(), Invalid> {
        if self
            .plugin_dir
            .as_ref()
            .is_some_and(|dir| dir.as_os_str().is_empty())
        {
            return Err(Invalid::new(
                "shared.plugin_dir",
                "must name a directory (leave the key out to refuse plugin paths through the API)",
            ));
        }
        for (key, value) in [
            (
                "shared.group_queue_max_messages",
                self.group_queue_max_messages as u64,
            ),
            (
                "shared.plugin_memory_mib",
                u64::from(self.plugin_memory_mib),
            ),
            ("shared.plugin_deadline_ms", self.plugin_deadline_ms),
            (
                "shared.plugin_init_deadline_ms",
                self.plugin_init_deadline_ms,
            ),
        ] {
            if value == 0 {
                return Err(Invalid::new(key, "must be at least 1"));
            }
        }
        for rule in &self.groups {
            rule.validate()?;
        }
        for (index, rule) in self.groups.iter().enumerate() {
            rule.queue_config()
                .validate(&format!("shared.groups[{index}]"))?;
        }
        for (index, declared) in self.declared.iter().enumerate() {
            let key = |field: &str| format!("shared.declared[{index}].{field}");
            declared
                .queue_config()
                .validate(&format!("shared.declared[{index}]"))?;
            if let Err(e) = crate::topic::validate_share_name(&declared.name) {
                return Err(Invalid::new(
                    key("name"),
                    format!("{:?}: {e}", declared.name),
                ));
            }
            if let Err(e) = crate::topic::validate_filter(&declared.filter, max_topic_levels) {
                return Err(Invalid::new(
                    key("filter"),
                    format!("{:?}: {e}", declared.filter),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn declared_groups_and_linger_parse() {
        let config = Config::from_toml(
            "[shared]\ngroup_linger_secs = 5\n\n[[shared.declared]]\nname = \"jobs\"\nfilter = \"jobs/#\"\n\n[[shared.declared]]\nname = \"$queue\"\nfilter = \"tasks/+\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(config.shared.group_linger_secs, 5);
        assert_eq!(
            config.shared.declared,
            vec![
                DeclaredGroupConfig {
                    name: "jobs".to_owned(),
                    filter: "jobs/#".to_owned(),
                    ..Default::default()
                },
                DeclaredGroupConfig {
                    name: "$queue".to_owned(),
                    filter: "tasks/+".to_owned(),
                    ..Default::default()
                },
            ]
        );
        assert_eq!(Config::default().shared.group_linger_secs, 60);
    }

    #[test]
    fn bad_declared_group_names_the_key() {
        let entry = |name: &str, filter: &str| {
            format!(
                "[[shared.declared]]\nname = \"ok\"\nfilter = \"a/b\"\n\n[[shared.declared]]\nname = {name:?}\nfilter = {filter:?}\n"
            )
        };
        for bad_name in ["", "a/b", "a+", "#"] {
            let err = Config::from_toml(&entry(bad_name, "jobs/#"), "t")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("shared.declared[1].name"),
                "{bad_name:?}: {err}"
            );
        }
        for bad_filter in ["", "a/#/b", "a+", "x#"] {
            let err = Config::from_toml(&entry("jobs", bad_filter), "t")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("shared.declared[1].filter"),
                "{bad_filter:?}: {err}"
            );
        }
        let err = Config::from_toml(
            "[limits]\nmax_topic_levels = 2\n[[shared.declared]]\nname = \"g\"\nfilter = \"a/b/c\"\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("shared.declared[0].filter"), "{err}");
        let err = Config::from_toml(
            "[[shared.declared]]\nname = \"g\"\nfilter = \"a\"\nstrategy = \"x\"\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("strategy"), "{err}");
    }
}
