//! The built-in strategies: Rust components from `plugins/`, compiled to `wasm32-wasip2` by
//! `build.rs` and embedded in the binary so it works standalone.

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// The name of the native (non-Wasm) round robin, usable as a strategy name in the config.
pub const NATIVE_ROUND_ROBIN: &str = "native_round_robin";

/// The component bytes of a built-in strategy.
pub fn component(name: &str) -> Option<&'static [u8]> {
    BUILTIN_PLUGINS
        .iter()
        .find(|(builtin, _)| *builtin == name)
        .map(|(_, bytes)| *bytes)
}

/// Every strategy name the config accepts.
pub fn names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = BUILTIN_PLUGINS.iter().map(|(name, _)| *name).collect();
    names.push(NATIVE_ROUND_ROBIN);
    names
}

#[cfg(test)]
mod tests {
    /// The components `build.rs` embedded are the strategies the broker also links natively
    /// (both come from `plugins/builtins.rs`).
    #[test]
    fn embeds_exactly_the_native_builtins() {
        let embedded: Vec<&str> = super::BUILTIN_PLUGINS
            .iter()
            .map(|(name, _)| *name)
            .collect();
        assert_eq!(embedded, sharq_strategies::BUILTIN_NAMES);
        for name in embedded {
            assert!(sharq_strategies::builtin(name).is_some(), "{name}");
        }
    }
}
