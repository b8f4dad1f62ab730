//! sharq-sdk: write a sharq shared-subscription dispatch strategy in Rust.
//!
//! Implement [`Strategy`] (only `select` is required), then export it as a component of
//! `sharq:dispatch@0.2.0` with [`export_strategy!`]:
//!
//! ```ignore
//! use sharq_sdk::{Init, MemberId, Members, Message, Needs, RoundRobin, Strategy};
//!
//! #[derive(Default)]
//! struct ByTenant { round_robin: RoundRobin }
//!
//! impl Strategy for ByTenant {
//!     fn init(&mut self, _init: &Init) -> Result<Needs, String> {
//!         Ok(Needs::USER_PROPERTIES)
//!     }
//!     fn select(&mut self, members: &Members, msg: &Message) -> Option<MemberId> {
//!         match msg.user_property("tenant") {
//!             Some(t) => members.rendezvous(sharq_sdk::hash_bytes(t.as_bytes())),
//!             None => self.round_robin.next(members),
//!         }
//!     }
//! }
//!
//! sharq_sdk::export_strategy!(ByTenant);
//! ```
//!
//! The SDK keeps the [`Members`] table from the contract's membership calls, installs a panic
//! hook that logs the panic's message through the contract's `log` import (a plugin has no
//! WASI, which Rust's default hook needs), and offers [`log()`]. Types written against the
//! WIT-mirroring [`Contract`] trait (the built-in strategies) export with [`export_contract!`].

mod glue;
mod members;
mod strategy;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod guest;

#[doc(hidden)]
pub use glue::{ContractGlue, Glue};
pub use members::{Member, Members, RoundRobin};
pub use sharq_strategies::rendezvous;
/// Seeded splitmix64: reproducible randomness (seed it from a param) without WASI.
pub use sharq_strategies::rng::SplitMix64 as Rng;
pub use sharq_strategies::{hash_bytes, MemberId, MsgMeta, Needs, Strategy as Contract};
pub use strategy::{Init, Managed, Message, Strategy};

/// A log level, as the contract's `log` import has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// Writes `message` to the broker's log, tagged with the group and the plugin. The broker
/// rate-limits a plugin's lines (a burst of 20, then 10 a second) and counts the ones it drops
/// (`log_dropped`). Outside a component (native unit tests) it goes to stderr.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    guest::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("{level:?}: {message}");
}

/// Exports a `Default + Strategy` type as the component's `select-member`, with the SDK's
/// member table. Invoke once, at the crate root of a `cdylib` built for `wasm32-wasip2`.
#[macro_export]
macro_rules! export_strategy {
    ($strategy:ty) => {
        $crate::__export_glue!($crate::Managed<$strategy>);
    };
}

/// Exports a `Default + Contract` type, one that handles the contract's calls itself.
#[macro_export]
macro_rules! export_contract {
    ($contract:ty) => {
        $crate::__export_glue!($crate::ContractGlue<$contract>);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_glue {
    ($glue:ty) => {
        use $crate::guest::exports::sharq::dispatch::select_member as __wit;

        ::std::thread_local! {
            // A guest instance is single-threaded and the host never re-enters it: a RefCell
            // borrow cannot fail.
            static GLUE: ::core::cell::RefCell<$glue> =
                ::core::cell::RefCell::new(<$glue as ::core::default::Default>::default());
        }

        fn __with<R>(f: impl FnOnce(&mut $glue) -> R) -> R {
            GLUE.with(|s| f(&mut s.borrow_mut()))
        }

        fn __meta(m: __wit::MsgMeta) -> $crate::MsgMeta {
            $crate::MsgMeta {
                topic_hash: m.topic_hash,
                publisher_hash: m.publisher_hash,
                qos: m.qos,
                retain: m.retain,
                payload_len: m.payload_len,
                key_hash: m.key_hash,
            }
        }

        struct __Component;

        impl __wit::Guest for __Component {
            fn init(
                group: ::std::string::String,
                params: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
            ) -> ::core::result::Result<__wit::Needs, ::std::string::String> {
                use $crate::Glue as _;
                $crate::guest::install_panic_hook();
                let needs = __with(|s| s.init(&group, &params))?;
                let mut flags = __wit::Needs::empty();
                flags.set(__wit::Needs::TOPIC, needs.topic);
                flags.set(__wit::Needs::PUBLISHER, needs.publisher);
                flags.set(__wit::Needs::PAYLOAD, needs.payload);
                flags.set(__wit::Needs::USER_PROPERTIES, needs.user_properties);
                flags.set(__wit::Needs::CONTENT_TYPE, needs.content_type);
                Ok(flags)
            }

            fn member_joined(m: __wit::Member) {
                use $crate::Glue as _;
                __with(|s| {
                    s.member_joined($crate::Member {
                        id: m.id,
                        client_id: m.client_id,
                        weight: m.weight,
                        subscribed_at_ms: m.subscribed_at_ms,
                        user_properties: m.user_properties,
                        online: false,
                        inflight: 0,
                        capacity: 0,
                        client_hash: 0,
                    })
                })
            }

            fn member_left(id: __wit::MemberId) {
                use $crate::Glue as _;
                __with(|s| s.member_left(id))
            }

            fn member_load(id: __wit::MemberId, inflight: u32, capacity: u32, online: bool) {
                use $crate::Glue as _;
                __with(|s| s.member_load(id, inflight, capacity, online))
            }

            fn select(m: __wit::MsgMeta) -> ::core::option::Option<__wit::MemberId> {
                use $crate::Glue as _;
                __with(|s| s.select(&__meta(m)))
            }

            fn select_full(
                msg: __wit::Message,
                m: __wit::MsgMeta,
            ) -> ::core::option::Option<__wit::MemberId> {
                use $crate::Glue as _;
                let message = $crate::Message {
                    topic: &msg.topic,
                    publisher: &msg.publisher,
                    payload: msg.payload.as_deref(),
                    user_properties: &msg.user_properties,
                    content_type: msg.content_type.as_deref(),
                    meta: __meta(m),
                };
                __with(|s| s.select_message(&message))
            }
        }

        $crate::guest::__sharq_export_world!(__Component with_types_in $crate::guest);
    };
}
