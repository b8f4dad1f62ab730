//! The component side: bindings for `sharq:dispatch@0.2.0`, the panic hook, and the export
//! macro's helpers. Compiled for wasm32 only.

wit_bindgen::generate!({
    world: "strategy-with-log",
    path: "../../wit/0.2.0",
    pub_export_macro: true,
    export_macro_name: "__sharq_export_world",
    default_bindings_module: "sharq_sdk::guest",
});

use sharq::dispatch::log as host;

pub fn log(level: crate::Level, message: &str) {
    let level = match level {
        crate::Level::Error => host::Level::Error,
        crate::Level::Warn => host::Level::Warn,
        crate::Level::Info => host::Level::Info,
        crate::Level::Debug => host::Level::Debug,
        crate::Level::Trace => host::Level::Trace,
    };
    host::log(level, message);
}

/// Replaces the standard panic hook, which reads the environment through WASI (a plugin
/// without WASI traps there, and the panic's message is lost), with one that logs the message
/// at `error`: the broker shows it with the trap that follows.
pub fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = if let Some(s) = info.payload().downcast_ref::<&str>() {
                (*s).to_owned()
            } else if let Some(s) = info.payload().downcast_ref::<String>() {
                s.clone()
            } else {
                "Box<dyn Any>".to_owned()
            };
            let line = match info.location() {
                Some(at) => format!(
                    "panicked at {}:{}:{}: {message}",
                    at.file(),
                    at.line(),
                    at.column()
                ),
                None => format!("panicked: {message}"),
            };
            log(crate::Level::Error, &line);
        }));
    });
}
