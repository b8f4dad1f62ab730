//! Parsing of the group's `params`: every value comes from a config file a person wrote, so
//! every failure is an `Err` that names the param, never a panic.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// Refuses duplicate keys and keys that neither `known` lists nor `prefixes` start: a typo in
/// a param name must not silently fall back to a default.
pub(crate) fn check_keys(
    strategy: &str,
    params: &[(String, String)],
    known: &[&str],
    prefixes: &[&str],
) -> Result<(), String> {
    let mut seen: Vec<&str> = Vec::with_capacity(params.len());
    for (k, _) in params {
        let key = k.as_str();
        if seen.contains(&key) {
            return Err(format!("param `{key}` is given more than once"));
        }
        seen.push(key);
        if !known.contains(&key) && !prefixes.iter().any(|p| key.starts_with(p)) {
            let mut accepted: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
            accepted.extend(prefixes.iter().map(|p| format!("`{p}<...>`")));
            let accepted = if accepted.is_empty() {
                "none".to_string()
            } else {
                accepted.join(", ")
            };
            return Err(format!(
                "unknown param `{key}` for strategy `{strategy}` (accepted: {accepted})"
            ));
        }
    }
    Ok(())
}

pub(crate) fn get<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// A u64 in decimal or `0x` hexadecimal (seeds are often written in hex).
pub(crate) fn parse_u64(key: &str, value: &str) -> Result<u64, String> {
    let v = value.trim();
    let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => v.replace('_', "").parse::<u64>(),
    };
    parsed.map_err(|_| {
        format!("param `{key}`: expected an unsigned integer (decimal or 0x hex), got `{value}`")
    })
}

pub(crate) fn parse_u32(key: &str, value: &str) -> Result<u32, String> {
    value.trim().parse::<u32>().map_err(|_| {
        format!("param `{key}`: expected an integer from 0 to 4294967295, got `{value}`")
    })
}

/// The seed for strategies that draw randomness: the `seed` param if given, else a constant
/// mixed with the group name, so that groups with default config do not move in lockstep
/// while every run with the same config still makes the same choices.
pub(crate) fn seed(group: &str, params: &[(String, String)]) -> Result<u64, String> {
    const DEFAULT_SEED: u64 = 0x5348_4152_515f_5244; // "SHARQ_RD"
    match get(params, "seed") {
        Some(v) => parse_u64("seed", v),
        None => Ok(DEFAULT_SEED ^ crate::hash_bytes(group.as_bytes())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::p;

    #[test]
    fn keys_are_checked() {
        assert!(check_keys("s", &p(&[("seed", "1")]), &["seed"], &[]).is_ok());
        let dup = check_keys("s", &p(&[("seed", "1"), ("seed", "2")]), &["seed"], &[]);
        assert!(dup.unwrap_err().contains("more than once"));
        let unknown = check_keys("s", &p(&[("sed", "1")]), &["seed"], &["weight."]);
        let e = unknown.unwrap_err();
        assert!(
            e.contains("`sed`") && e.contains("`seed`") && e.contains("`weight.<...>`"),
            "{e}"
        );
        assert!(check_keys("s", &p(&[("weight.a", "1")]), &[], &["weight."]).is_ok());
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u64("seed", "0x10"), Ok(16));
        assert_eq!(parse_u64("seed", " 1_000 "), Ok(1000));
        assert!(parse_u64("seed", "-1").unwrap_err().contains("`seed`"));
        assert!(parse_u32("w", "4294967296").unwrap_err().contains("`w`"));
        assert_ne!(seed("a", &[]), seed("b", &[]));
        assert_eq!(seed("a", &p(&[("seed", "7")])), Ok(7));
    }
}
