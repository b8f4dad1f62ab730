// The built-in dispatch strategies: the one list of them. Each is a crate in `plugins/<name>/`
// named `sharq-plugin-<name with dashes>`, and a member of this workspace (`Cargo.toml`).
//
// Read by the root `build.rs`, which builds and embeds exactly these (and refuses a workspace
// whose strategy members differ), and by `sharq-strategies`, whose `BUILTIN_NAMES` is this list
// (`include!`): a Rust array of string literals, one a line, in the order errors and the admin
// API list them. A new one also needs its `plugins/<name>/` crate, its module in
// `sharq-strategies`, and its arm in `sharq_strategies::builtin`.
[
    "random",
    "round_robin",
    "round_robin_per_publisher",
    "sticky",
    "hash_clientid",
    "hash_topic",
    "hash_topic_levels",
    "least_inflight",
    "weighted",
    "failover",
]
