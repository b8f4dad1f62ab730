//! `plugin_cost`: what a strategy component costs the broker, per language: its size, compile
//! time cold and from the disk cache, instantiation (with `init`), and the cost of one
//! `select`/`select-full` on a group of 8 members. Prints one Markdown table row per file.
//!
//! ```text
//! cargo run --release --example plugin_cost -- [--wasi] [--memory-mib N] [--params k=v] FILE.wasm...
//! ```
//! `--wasi` applies to every file; run it once per kind (bench/results/plugin-languages.md shows both).

use std::time::{Duration, Instant};

use sharq::strategy::{key_hash, MemberInfo, MemberLoad, MessageView, SandboxLimits, WasmHost};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut wasi = false;
    let mut memory_mib = 16usize;
    let mut params = Vec::new();
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--wasi" => wasi = true,
            "--memory-mib" => memory_mib = args.next().ok_or("--memory-mib N")?.parse()?,
            "--params" => {
                let pair = args.next().ok_or("--params k=v")?;
                let (k, v) = pair.split_once('=').ok_or("--params k=v")?;
                params.push((k.to_owned(), v.to_owned()));
            }
            _ => files.push(arg),
        }
    }
    let limits = SandboxLimits {
        memory_bytes: memory_mib << 20,
        deadline_ticks: 1000,
        init_deadline_ticks: 1000,
    };
    println!("| component | size | compile (cold) | load from disk cache | instantiate + init | select |");
    println!("|---|---|---|---|---|---|");
    for file in files {
        let bytes = std::fs::read(&file)?;
        let cache = tempfile::tempdir()?;
        let started = Instant::now();
        WasmHost::with_disk_cache(limits, Some(cache.path().to_path_buf()))?
            .load_with(&file, &bytes, wasi)?;
        let cold = started.elapsed();
        // A fresh host: what a restart with an unchanged plugin pays.
        let host = WasmHost::with_disk_cache(limits, Some(cache.path().to_path_buf()))?;
        let started = Instant::now();
        let plugin = host.load_with(&file, &bytes, wasi)?;
        let cached = started.elapsed();
        let started = Instant::now();
        let mut instance = host.instantiate(&plugin, "cost", &params)?;
        let instantiate = started.elapsed();
        for id in 1..=8u64 {
            instance.member_joined(&MemberInfo {
                id,
                client_id: format!("m{id}").into(),
                weight: 1,
                subscribed_at_ms: id,
                user_properties: Vec::new(),
            })?;
            instance.member_load(
                id,
                MemberLoad {
                    inflight: 0,
                    capacity: 64,
                    online: true,
                },
            )?;
        }
        let topics: Vec<String> = (0..1000).map(|k| format!("site/key-{k}/reading")).collect();
        let mut select = |n: usize| -> Result<Duration, Box<dyn std::error::Error>> {
            let started = Instant::now();
            for i in 0..n {
                let topic = &topics[i % topics.len()];
                instance.select(&MessageView {
                    topic,
                    publisher: "publisher",
                    payload: b"{}",
                    topic_hash: key_hash(topic.as_bytes()),
                    key_hash: key_hash(topic.as_bytes()),
                    publisher_hash: key_hash(b"publisher"),
                    qos: 1,
                    retain: false,
                    user_properties: &[],
                    content_type: None,
                })?;
            }
            Ok(started.elapsed() / n as u32)
        };
        select(2_000)?; // warm-up
        let per_select = select(20_000)?;
        let name = std::path::Path::new(&file)
            .file_name()
            .map_or(file.clone(), |n| n.to_string_lossy().into_owned());
        println!(
            "| {name} | {:.1} KB | {:.0} ms | {:.1} ms | {:.2} ms | {:.2} µs |",
            bytes.len() as f64 / 1000.0,
            cold.as_secs_f64() * 1e3,
            cached.as_secs_f64() * 1e3,
            instantiate.as_secs_f64() * 1e3,
            per_select.as_secs_f64() * 1e6
        );
    }
    Ok(())
}
