//! Glue shared by the built-in guest crates.
//!
//! Each guest crate runs `wit_bindgen::generate!` itself (the bindings must live in the crate
//! that exports them) and then `export_strategy!(Type)`, which implements the generated
//! `Guest` trait by forwarding to one instance of `Type`. The conversions live here once
//! instead of ten times; this crate deliberately does not depend on wit-bindgen, so the macro
//! names the generated items by the paths `generate!` gives them in the calling crate.
#![no_std]

/// Re-exported so guest crates need only this crate and wit-bindgen.
pub use sharq_strategies as strategies;

/// Implements the generated `select-member` `Guest` trait for a unit struct `Component` that
/// forwards to a `Default + Strategy` type, and exports it. Invoke once, at the crate root,
/// after `wit_bindgen::generate!`.
#[macro_export]
macro_rules! export_strategy {
    ($strategy:ty) => {
        use exports::sharq::dispatch::select_member as __wit;

        ::std::thread_local! {
            // A guest instance is single-threaded and the host never re-enters it, so a
            // RefCell is enough and its borrow can never fail; a thread_local avoids
            // `static mut` without paying for a lock.
            static STRATEGY: ::core::cell::RefCell<$strategy> =
                ::core::cell::RefCell::new(<$strategy as ::core::default::Default>::default());
        }

        fn __with<R>(f: impl FnOnce(&mut $strategy) -> R) -> R {
            STRATEGY.with(|s| f(&mut s.borrow_mut()))
        }

        fn __meta(m: __wit::MsgMeta) -> $crate::strategies::MsgMeta {
            $crate::strategies::MsgMeta {
                topic_hash: m.topic_hash,
                publisher_hash: m.publisher_hash,
                qos: m.qos,
                retain: m.retain,
                payload_len: m.payload_len,
            }
        }

        struct Component;

        impl __wit::Guest for Component {
            fn init(
                group: ::std::string::String,
                params: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
            ) -> ::core::result::Result<__wit::Needs, ::std::string::String> {
                use $crate::strategies::Strategy as _;
                // Configure a fresh instance and swap it in only on success: on `err` the host
                // keeps using this instance as it was.
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
                use $crate::strategies::Strategy as _;
                __with(|s| {
                    s.member_joined($crate::strategies::Member {
                        id: m.id,
                        client_id: m.client_id,
                        weight: m.weight,
                        subscribed_at_ms: m.subscribed_at_ms,
                    })
                })
            }

            fn member_left(id: __wit::MemberId) {
                use $crate::strategies::Strategy as _;
                __with(|s| s.member_left(id))
            }

            fn member_load(id: __wit::MemberId, inflight: u32, capacity: u32, online: bool) {
                use $crate::strategies::Strategy as _;
                __with(|s| s.member_load(id, inflight, capacity, online))
            }

            fn select(m: __wit::MsgMeta) -> ::core::option::Option<__wit::MemberId> {
                use $crate::strategies::Strategy as _;
                __with(|s| s.select(&__meta(m)))
            }

            fn select_full(
                topic: ::std::string::String,
                publisher: ::std::string::String,
                payload: ::core::option::Option<::std::vec::Vec<u8>>,
                m: __wit::MsgMeta,
            ) -> ::core::option::Option<__wit::MemberId> {
                use $crate::strategies::Strategy as _;
                __with(|s| s.select_full(&topic, &publisher, payload.as_deref(), &__meta(m)))
            }
        }

        export!(Component);
    };
}
