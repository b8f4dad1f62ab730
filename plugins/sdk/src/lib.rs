//! sharq-sdk: write a sharq dispatch strategy in Rust.
//!
//! The strategy logic is plain Rust against [`Strategy`] (re-exported from
//! `sharq-strategies`, where the built-in strategies live); [`export_strategy!`] turns a
//! `Default + Strategy` type into a component of `sharq:dispatch@0.2.0`, world
//! `strategy-with-log`. The component's panics are logged with their message through the
//! contract's `log` import instead of through WASI, which a plugin does not get.
//!
//! Work in progress (issue #16): see WIP-16.md at the repository root.

pub use sharq_strategies::members::{MemberState, MemberTable};
pub use sharq_strategies::rendezvous;
pub use sharq_strategies::{hash_bytes, Member, MemberId, MsgMeta, Needs, Strategy};

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod guest;

/// A log level, as the contract's `log` import has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// Writes `message` to the broker's log, with the group's and the plugin's name. The broker
/// rate-limits these lines (see the WIT); outside a component (unit tests) it goes to stderr.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    guest::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("{level:?}: {message}");
}

/// Exports a `Default + Strategy` type as the component's `select-member`. Invoke once, at the
/// crate root of a `cdylib` built for `wasm32-wasip2`.
#[macro_export]
macro_rules! export_strategy {
    ($strategy:ty) => {
        use $crate::guest::exports::sharq::dispatch::select_member as __wit;

        ::std::thread_local! {
            // A guest instance is single-threaded and the host never re-enters it: a RefCell
            // borrow cannot fail.
            static STRATEGY: ::core::cell::RefCell<$strategy> =
                ::core::cell::RefCell::new(<$strategy as ::core::default::Default>::default());
        }

        fn __with<R>(f: impl FnOnce(&mut $strategy) -> R) -> R {
            STRATEGY.with(|s| f(&mut s.borrow_mut()))
        }

        fn __meta(m: __wit::MsgMeta) -> $crate::MsgMeta {
            $crate::MsgMeta {
                topic_hash: m.topic_hash,
                publisher_hash: m.publisher_hash,
                qos: m.qos,
                retain: m.retain,
                payload_len: m.payload_len,
            }
        }

        struct __Component;

        impl __wit::Guest for __Component {
            fn init(
                group: ::std::string::String,
                params: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
            ) -> ::core::result::Result<__wit::Needs, ::std::string::String> {
                use $crate::Strategy as _;
                $crate::guest::install_panic_hook();
                // Swap a fresh instance in only on success: on `err` the host keeps this one.
                let mut fresh = <$strategy as ::core::default::Default>::default();
                let needs = fresh.init(&group, &params)?;
                __with(|s| *s = fresh);
                let mut flags = __wit::Needs::empty();
                flags.set(__wit::Needs::TOPIC, needs.topic);
                flags.set(__wit::Needs::PUBLISHER, needs.publisher);
                flags.set(__wit::Needs::PAYLOAD, needs.payload);
                Ok(flags)
            }

            fn member_joined(m: __wit::Member) {
                use $crate::Strategy as _;
                __with(|s| {
                    s.member_joined($crate::Member {
                        id: m.id,
                        client_id: m.client_id,
                        weight: m.weight,
                        subscribed_at_ms: m.subscribed_at_ms,
                    })
                })
            }

            fn member_left(id: __wit::MemberId) {
                use $crate::Strategy as _;
                __with(|s| s.member_left(id))
            }

            fn member_load(id: __wit::MemberId, inflight: u32, capacity: u32, online: bool) {
                use $crate::Strategy as _;
                __with(|s| s.member_load(id, inflight, capacity, online))
            }

            fn select(m: __wit::MsgMeta) -> ::core::option::Option<__wit::MemberId> {
                use $crate::Strategy as _;
                __with(|s| s.select(&__meta(m)))
            }

            fn select_full(
                msg: __wit::Message,
                m: __wit::MsgMeta,
            ) -> ::core::option::Option<__wit::MemberId> {
                use $crate::Strategy as _;
                __with(|s| {
                    s.select_full(&msg.topic, &msg.publisher, msg.payload.as_deref(), &__meta(m))
                })
            }
        }

        $crate::guest::__sharq_export_world!(__Component with_types_in $crate::guest);
    };
}
