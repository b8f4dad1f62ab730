//! The integration tests, as one test binary: each file is a module of this crate, named after
//! the area it tests (`broker_*`, `codec_*`, `shared_*`, `strategy_*` ...), and `common` holds
//! the helpers they share.
//!
//! One binary rather than one per file: each test binary links the whole broker with wasmtime
//! and cranelift, so 45 of them cost 45 links of ~60 MB on every test build. Tests run on the
//! harness's threads (one per core unless `--test-threads` or `RUST_TEST_THREADS` says
//! otherwise) within one process, so none may change process-wide state (the environment, the
//! current directory, signal dispositions); every broker listens on its own ephemeral port and
//! every store lives in its own temp dir. A test module `foo` runs alone with
//! `cargo test --test it foo::`.

mod common;

mod auth_acl;
mod auth_passwords;
mod auth_scram;
mod broker_binary;
mod broker_connect;
mod broker_limits;
mod broker_negative;
mod broker_pipelining;
mod broker_properties;
mod broker_publish_qos;
mod broker_retain;
mod broker_session_store;
mod broker_subscribe;
mod broker_will;
mod codec_differential;
mod codec_random;
mod codec_roundtrip;
mod codec_strategies;
mod codec_vectors;
mod http_api;
mod http_dashboard;
mod http_metrics;
mod interop;
mod net_tls;
mod net_websocket;
mod persistence_crash;
mod persistence_restart;
mod shared_churn;
mod shared_declared;
mod shared_dispatch;
mod shared_group_queue;
mod shared_legacy_syntax;
mod shared_redispatch;
mod shared_scale;
mod shared_validation;
mod shared_work_queue;
mod strategy_builtins;
mod strategy_hostile;
mod strategy_hot_swap;
mod strategy_languages;
mod strategy_plugin_check;
mod strategy_plugin_test;
mod strategy_scaffold;
mod strategy_sdk;
mod topic_props;
