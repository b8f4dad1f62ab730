//! `sharq plugin check`: validates a strategy component and runs it on a simulated group, so a
//! plugin author sees its distribution, its stability under membership change, and its cost
//! before deploying it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use bytestring::ByteString;

use super::{
    key_hash, MemberInfo, MemberLoad, MessageView, SandboxLimits, StrategyError, WasmHost,
    WasmInstance,
};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    pub members: u32,
    pub messages: u32,
    pub params: Vec<(String, String)>,
    pub group: String,
    pub limits: SandboxLimits,
    /// Serve WASI imports from an empty context, as `wasi = true` does in the config.
    pub wasi: bool,
}

/// Why a check stopped: the component could not be set up, or a call failed during the
/// simulation (named, with the message it failed on, so the author can reproduce it).
#[derive(Debug, thiserror::Error)]
// Boxed: a check error is rare, and the `Result`s it rides in are on the simulation's path.
pub enum CheckError {
    #[error(transparent)]
    Setup(Box<StrategyError>),
    #[error("{call} failed {at}: {source}")]
    Call {
        call: &'static str,
        /// Where in the simulation: "on message 4711 of 100000", "for member-3", ...
        at: String,
        #[source]
        source: Box<StrategyError>,
    },
}

impl From<StrategyError> for CheckError {
    fn from(e: StrategyError) -> CheckError {
        CheckError::Setup(Box::new(e))
    }
}

/// Names the call and the point of the simulation a failed guest call happened at.
fn during<T>(
    result: Result<T, StrategyError>,
    call: &'static str,
    at: impl FnOnce() -> String,
) -> Result<T, CheckError> {
    result.map_err(|source| CheckError::Call {
        call,
        at: at(),
        source: Box::new(source),
    })
}

/// The findings; `render` prints them for a person.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub origin: String,
    /// The contract version the component implements ("0.1.0" or "0.2.0").
    pub contract: &'static str,
    pub needs: String,
    /// Messages per member id while the group is stable (before any membership change): the
    /// distribution the strategy promises.
    pub distribution: BTreeMap<u64, u64>,
    /// Messages per member id after one member joined and another left.
    pub distribution_after_change: BTreeMap<u64, u64>,
    pub declined: u64,
    pub invalid_answers: u64,
    /// Of the sample keys, how many changed member when one member joined / one left.
    pub moved_on_join: (usize, usize),
    pub moved_on_leave: (usize, usize),
    pub nanos_per_select: f64,
    pub jain_index: f64,
}

/// Distinct message keys (topic and publisher) the simulation cycles through.
const SAMPLE_KEYS: u32 = 1000;

pub fn run(path: &str, bytes: &[u8], options: &CheckOptions) -> Result<CheckReport, CheckError> {
    let host = WasmHost::new(options.limits)?;
    let plugin = host.load_with(path, bytes, options.wasi)?;
    let mut instance = host.instantiate(&plugin, &options.group, &options.params)?;
    let needs = instance.needs;
    let select = needs.select_call();
    let total = options.messages;
    let mut report = CheckReport {
        origin: path.to_owned(),
        contract: plugin.contract_version(),
        needs: format!(
            "topic={} publisher={} payload={} user-properties={} content-type={}",
            needs.topic, needs.publisher, needs.payload, needs.user_properties, needs.content_type
        ),
        ..CheckReport::default()
    };
    let mut members: Vec<u64> = Vec::new();
    for id in 1..=u64::from(options.members.max(1)) {
        join(&mut instance, id)?;
        members.push(id);
    }

    let half = options.messages / 2;
    let started = Instant::now();
    let mut selects = 0u64;
    for seq in 0..half {
        let mut distribution = std::mem::take(&mut report.distribution);
        let answer = during(select_for(&mut instance, seq), select, || {
            format!("on message {} of {total}", seq + 1)
        })?;
        tally(answer, &members, &mut distribution, &mut report);
        report.distribution = distribution;
        selects += 1;
    }

    // Stability: where do the sample keys go before and after a member joins, then leaves.
    let before = key_map(&mut instance, select, "before the membership changed")?;
    let newcomer = u64::from(options.members.max(1)) + 1;
    join(&mut instance, newcomer)?;
    members.push(newcomer);
    let after_join = key_map(&mut instance, select, "after a member joined")?;
    report.moved_on_join = (moved(&before, &after_join), before.len());
    during(instance.member_left(1), "member-left", || {
        "for member-1".to_owned()
    })?;
    members.retain(|m| *m != 1);
    let after_leave = key_map(&mut instance, select, "after a member left")?;
    report.moved_on_leave = (moved(&after_join, &after_leave), after_join.len());

    let mut after_change = BTreeMap::new();
    for seq in half..options.messages {
        let answer = during(select_for(&mut instance, seq), select, || {
            format!("on message {} of {total}", seq + 1)
        })?;
        tally(answer, &members, &mut after_change, &mut report);
        selects += 1;
    }
    report.distribution_after_change = after_change;
    let elapsed = started.elapsed();
    // The key-map probes are selects too; they are not in the timing's count, so the figure
    // slightly overstates the cost — the safe direction.
    report.nanos_per_select = elapsed.as_nanos() as f64 / selects.max(1) as f64;
    report.jain_index = jain(report.distribution.values().copied());
    Ok(report)
}

fn join(instance: &mut WasmInstance, id: u64) -> Result<(), CheckError> {
    let joined = instance.member_joined(&MemberInfo {
        id,
        client_id: ByteString::from(format!("member-{id}")),
        weight: 1,
        subscribed_at_ms: 1_700_000_000_000 + id,
        user_properties: Vec::new(),
    });
    during(joined, "member-joined", || format!("for member-{id}"))?;
    let load = MemberLoad {
        inflight: 0,
        capacity: 64,
        online: true,
    };
    during(instance.member_load(id, load), "member-load", || {
        format!("for member-{id}")
    })
}

fn message_for(seq: u32) -> (String, String, Vec<u8>) {
    let key = seq % SAMPLE_KEYS;
    let topic = format!("devices/dev-{key}/telemetry");
    let publisher = format!("publisher-{}", key % 50);
    let payload = format!("{{\"device\":\"dev-{key}\",\"seq\":{seq}}}").into_bytes();
    (topic, publisher, payload)
}

fn select_for(instance: &mut WasmInstance, seq: u32) -> Result<Option<u64>, StrategyError> {
    let (topic, publisher, payload) = message_for(seq);
    instance.select(&MessageView {
        topic: &topic,
        publisher: &publisher,
        payload: &payload,
        topic_hash: key_hash(topic.as_bytes()),
        key_hash: key_hash(topic.as_bytes()),
        publisher_hash: key_hash(publisher.as_bytes()),
        qos: 1,
        retain: false,
        user_properties: &[],
        content_type: None,
    })
}

fn tally(
    answer: Option<u64>,
    members: &[u64],
    distribution: &mut BTreeMap<u64, u64>,
    report: &mut CheckReport,
) {
    match answer {
        Some(id) if members.contains(&id) => *distribution.entry(id).or_default() += 1,
        Some(_) => report.invalid_answers += 1,
        None => report.declined += 1,
    }
}

fn key_map(
    instance: &mut WasmInstance,
    select: &'static str,
    when: &str,
) -> Result<Vec<Option<u64>>, CheckError> {
    (0..SAMPLE_KEYS)
        .map(|seq| {
            during(select_for(instance, seq), select, || {
                format!("on sample key {} of {SAMPLE_KEYS} {when}", seq + 1)
            })
        })
        .collect()
}

fn moved(before: &[Option<u64>], after: &[Option<u64>]) -> usize {
    before.iter().zip(after).filter(|(b, a)| b != a).count()
}

/// Jain's fairness index: 1.0 when every member got the same share, 1/n when one got all.
pub fn jain(counts: impl Iterator<Item = u64> + Clone) -> f64 {
    let n = counts.clone().count() as f64;
    let sum: f64 = counts.clone().map(|c| c as f64).sum();
    let squares: f64 = counts.map(|c| (c as f64) * (c as f64)).sum();
    if n == 0.0 || squares == 0.0 {
        return 0.0;
    }
    sum * sum / (n * squares)
}

impl CheckReport {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "plugin:  {}", self.origin);
        let _ = writeln!(
            out,
            "status:  compiles, links against sharq:dispatch/strategy@{}, init accepted the params",
            self.contract
        );
        let _ = writeln!(out, "needs:   {}", self.needs);
        let _ = writeln!(
            out,
            "\n{} declined (left to the round robin), {} invalid answers (not a member)",
            self.declined, self.invalid_answers
        );
        render_distribution(&mut out, "distribution, stable group", &self.distribution);
        let _ = writeln!(
            out,
            "  Jain fairness index: {:.4} (1.0 = perfectly even)",
            self.jain_index
        );
        render_distribution(
            &mut out,
            "distribution after member-(n+1) joined and member-1 left",
            &self.distribution_after_change,
        );
        let _ = writeln!(
            out,
            "\nkeys moved when a member joined: {} of {} ({:.1}%)",
            self.moved_on_join.0,
            self.moved_on_join.1,
            percent(self.moved_on_join)
        );
        let _ = writeln!(
            out,
            "keys moved when a member left:   {} of {} ({:.1}%)",
            self.moved_on_leave.0,
            self.moved_on_leave.1,
            percent(self.moved_on_leave)
        );
        let _ = writeln!(
            out,
            "\ncost: {:.0} ns per select (host call included)",
            self.nanos_per_select
        );
        out
    }
}

fn render_distribution(out: &mut String, title: &str, distribution: &BTreeMap<u64, u64>) {
    let total: u64 = distribution.values().sum();
    let widest = distribution.values().copied().max().unwrap_or(1).max(1);
    let _ = writeln!(out, "\n{title} ({total} messages):");
    for (id, count) in distribution {
        let bar = "#".repeat(((*count as f64 / widest as f64) * 50.0).round() as usize);
        let share = if total == 0 {
            0.0
        } else {
            *count as f64 * 100.0 / total as f64
        };
        let _ = writeln!(out, "  member-{id:<4} {count:>9} {share:>6.2}%  {bar}");
    }
}

fn percent((part, whole): (usize, usize)) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}
