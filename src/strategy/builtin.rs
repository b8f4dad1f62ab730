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
