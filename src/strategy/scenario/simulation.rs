//! Replaying a scenario: the group as the broker would hold it, driving a real instance of the
//! component, and where each message lands.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytestring::ByteString;

use super::{
    Action, Expectation, LoadState, Publish, Scenario, ScenarioError, ScenarioReport, Step,
    CAPACITY,
};
use crate::strategy::host::Plugin;
use crate::strategy::{
    key_hash, MemberInfo, MemberLoad, MessageView, SandboxLimits, StrategyError, WasmHost,
    WasmInstance,
};

/// `{n}` replaced by the message's index within its step.
fn expand(template: &str, n: u32) -> String {
    template.replace("{n}", &n.to_string())
}

/// A message of a publish step, `{n}` expanded.
#[derive(Debug, Clone, PartialEq)]
struct Message {
    topic: String,
    publisher: String,
    payload: Vec<u8>,
    properties: Vec<(ByteString, ByteString)>,
    content_type: Option<String>,
    qos: u8,
}

fn messages(publish: &Publish) -> Vec<Message> {
    (0..publish.count)
        .map(|n| Message {
            topic: expand(&publish.topic, n),
            publisher: expand(&publish.publisher, n),
            payload: expand(&publish.payload, n).into_bytes(),
            properties: publish
                .properties
                .iter()
                .map(|(k, v)| (ByteString::from(k.as_str()), ByteString::from(expand(v, n))))
                .collect(),
            content_type: publish.content_type.clone(),
            qos: publish.qos,
        })
        .collect()
}

/// Where one message ended up.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// The strategy chose this online member with room.
    Member(u64),
    /// The strategy declined: the broker's round robin places it.
    Fallback,
    /// No member had room: the broker queues it without asking the strategy.
    Queued,
    /// The answer is no member's id.
    Invalid(u64),
    /// The answer is a member that cannot take it ("full" or "offline").
    Unavailable(u64, &'static str),
    /// The call failed (trap, timeout), or the instance could not be rebuilt.
    Failed(String),
}

impl Outcome {
    /// The member it lands on, for "moved" comparisons.
    fn landing(&self) -> Option<u64> {
        match self {
            Outcome::Member(id) => Some(*id),
            _ => None,
        }
    }

    fn is_fault(&self) -> bool {
        matches!(
            self,
            Outcome::Invalid(_) | Outcome::Unavailable(..) | Outcome::Failed(_)
        )
    }
}

#[derive(Debug, Clone)]
struct SimMember {
    info: MemberInfo,
    load: MemberLoad,
}

/// The group as the broker would hold it, and the instance it drives.
struct Simulation {
    host: WasmHost,
    plugin: Arc<Plugin>,
    group: String,
    params: Vec<(String, String)>,
    /// `None` after a failed call, until rebuilt.
    instance: Option<WasmInstance>,
    /// Set when a rebuild failed: nothing more can be asked.
    broken: Option<String>,
    members: Vec<SimMember>,
    next_id: u64,
    /// Every id ever given, with its client, to name members that have left.
    names: HashMap<u64, String>,
    /// The last publish step: its number, its messages and where they went.
    last_publish: Option<(usize, Vec<Message>, Vec<Outcome>)>,
}

/// Replays `scenario` against the component `bytes`. `force_wasi` links WASI even when the
/// scenario does not ask for it. An error means nothing could be tested: the component does
/// not load, or `init` refused the scenario's params.
pub fn run(
    origin: &str,
    bytes: &[u8],
    scenario: &Scenario,
    limits: SandboxLimits,
    force_wasi: bool,
) -> Result<ScenarioReport, ScenarioError> {
    let host = WasmHost::new(limits)?;
    let plugin = host.load_with(origin, bytes, scenario.wasi || force_wasi)?;
    let instance = host.instantiate(&plugin, &scenario.group, &scenario.params)?;
    let mut sim = Simulation {
        host,
        plugin: plugin.clone(),
        group: scenario.group.clone(),
        params: scenario.params.clone(),
        instance: Some(instance),
        broken: None,
        members: Vec::new(),
        next_id: 1,
        names: HashMap::new(),
        last_publish: None,
    };
    let mut report = ScenarioReport {
        contract: plugin.contract_version(),
        ..ScenarioReport::default()
    };
    for (index, step) in scenario.steps.iter().enumerate() {
        let number = index + 1;
        let (title, problems, detail) = sim.step(number, step);
        report.steps += 1;
        report.expectations += usize::from(step.expect.is_some());
        let line = if problems.is_empty() {
            match detail {
                Some(detail) => format!("step {number} {title}: ok ({detail})"),
                None => format!("step {number} {title}: ok"),
            }
        } else {
            report.failed += 1;
            format!("step {number} {title}: FAILED: {}", problems.join("; "))
        };
        report.lines.push(line);
    }
    Ok(report)
}

impl Simulation {
    /// Runs one step: its title, its problems (empty when it passed), and a detail for an ok.
    fn step(&mut self, number: usize, step: &Step) -> (String, Vec<String>, Option<String>) {
        let mut problems = Vec::new();
        let mut detail = None;
        // Rebuild a failed instance before the membership changes: the replay must not
        // already contain the member this step joins (it would be told twice) or lack the
        // one it removes. A failed rebuild is reported by the step's first call.
        if self.instance.is_none() && self.broken.is_none() {
            let _ = self.rebuild();
        }
        let title = match &step.action {
            Action::Join(join) => {
                let id = self.next_id;
                self.next_id += 1;
                self.names.insert(id, join.client.clone());
                let member = SimMember {
                    info: MemberInfo {
                        id,
                        client_id: ByteString::from(join.client.as_str()),
                        weight: join.weight,
                        subscribed_at_ms: 1_700_000_000_000 + id,
                        user_properties: join
                            .properties
                            .iter()
                            .map(|(k, v)| (ByteString::from(k.as_str()), v.as_str().into()))
                            .collect(),
                    },
                    load: MemberLoad {
                        inflight: 0,
                        capacity: CAPACITY,
                        online: true,
                    },
                };
                self.members.push(member.clone());
                self.call("member-joined", &mut problems, |i| {
                    i.member_joined(&member.info)
                });
                self.call("member-load", &mut problems, |i| {
                    i.member_load(id, member.load)
                });
                format!("join {} (member {id})", join.client)
            }
            Action::Load(load) => {
                let state = match load.state {
                    LoadState::Full => "full",
                    LoadState::Room => "room",
                    LoadState::Offline => "offline",
                    LoadState::Online => "online",
                };
                if let Some(member) = self
                    .members
                    .iter_mut()
                    .find(|m| *m.info.client_id == *load.client)
                {
                    let current = &mut member.load;
                    match load.state {
                        LoadState::Full => {
                            current.inflight = current.capacity;
                            current.online = true;
                        }
                        LoadState::Room => {
                            current.inflight = 0;
                            current.online = true;
                        }
                        LoadState::Offline => current.online = false,
                        LoadState::Online => current.online = true,
                    }
                    let (id, new) = (member.info.id, *current);
                    self.call("member-load", &mut problems, |i| i.member_load(id, new));
                }
                format!("load {} {state}", load.client)
            }
            Action::Leave(client) => {
                if let Some(index) = self
                    .members
                    .iter()
                    .position(|m| *m.info.client_id == **client)
                {
                    let id = self.members.remove(index).info.id;
                    self.call("member-left", &mut problems, |i| i.member_left(id));
                }
                format!("leave {client}")
            }
            Action::Publish(publish) => {
                let batch = messages(publish);
                let outcomes: Vec<Outcome> = batch.iter().map(|m| self.dispatch(m)).collect();
                problems.extend(self.faults(&outcomes));
                match &step.expect {
                    Some(Expectation::Client(client)) => {
                        let id = self.id_of(client);
                        problems.extend(self.expect_all(
                            &outcomes,
                            id.map(Outcome::Member),
                            client,
                        ));
                    }
                    Some(Expectation::Fallback) => {
                        problems.extend(self.expect_all(
                            &outcomes,
                            Some(Outcome::Fallback),
                            "fallback",
                        ));
                    }
                    Some(Expectation::Even(pct)) => {
                        problems.extend(self.expect_even(&outcomes, *pct))
                    }
                    _ => {}
                }
                detail = Some(self.spread(&outcomes));
                self.last_publish = Some((number, batch, outcomes));
                format!(
                    "publish {} message{}",
                    publish.count,
                    if publish.count == 1 { "" } else { "s" }
                )
            }
        };
        if let Some(Expectation::MovedAtMost(pct)) = step.expect {
            match self.moved(pct) {
                Ok(ok) => detail = Some(ok),
                Err(mut failed) => problems.append(&mut failed),
            }
        }
        (title, problems, detail)
    }

    fn id_of(&self, client: &str) -> Option<u64> {
        self.members
            .iter()
            .find(|m| *m.info.client_id == *client)
            .map(|m| m.info.id)
    }

    fn name(&self, id: u64) -> String {
        self.names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("member id {id}"))
    }

    /// Calls into the instance (rebuilding it first if an earlier call failed); a failure is
    /// recorded as a problem naming the call, and drops the instance as the broker does.
    fn call<T>(
        &mut self,
        call: &str,
        problems: &mut Vec<String>,
        f: impl FnOnce(&mut WasmInstance) -> Result<T, StrategyError>,
    ) -> Option<T> {
        match self.try_call(f) {
            Ok(value) => Some(value),
            Err(e) => {
                problems.push(format!("{call} failed: {e}"));
                None
            }
        }
    }

    fn try_call<T>(
        &mut self,
        f: impl FnOnce(&mut WasmInstance) -> Result<T, StrategyError>,
    ) -> Result<T, String> {
        if let Some(broken) = &self.broken {
            return Err(format!("not called: {broken}"));
        }
        if self.instance.is_none() {
            self.rebuild()?;
        }
        let Some(instance) = self.instance.as_mut() else {
            return Err("no instance".to_owned());
        };
        f(instance).map_err(|e| {
            // A failed instance is poisoned: the broker drops it and builds a new one.
            self.instance = None;
            e.to_string()
        })
    }

    /// A new instance, `init`-ed and told the membership, as the broker rebuilds after a
    /// failure. If that fails too, the run cannot go on asking the strategy.
    fn rebuild(&mut self) -> Result<(), String> {
        let built = self
            .host
            .instantiate(&self.plugin, &self.group, &self.params)
            .map_err(|e| format!("init failed while rebuilding the instance: {e}"))
            .and_then(|mut instance| {
                instance.begin_setup();
                for member in &self.members {
                    instance
                        .member_joined(&member.info)
                        .and_then(|()| instance.member_load(member.info.id, member.load))
                        .map_err(|e| {
                            format!("replaying membership into the rebuilt instance failed: {e}")
                        })?;
                }
                instance.end_setup();
                Ok(instance)
            });
        match built {
            Ok(instance) => {
                self.instance = Some(instance);
                Ok(())
            }
            Err(e) => {
                self.broken = Some(e.clone());
                Err(e)
            }
        }
    }

    fn dispatch(&mut self, message: &Message) -> Outcome {
        // The broker asks the strategy only when some member can take the message.
        if !self.members.iter().any(|m| m.load.has_room()) {
            return Outcome::Queued;
        }
        let topic_hash = key_hash(message.topic.as_bytes());
        let view = MessageView {
            topic: &message.topic,
            publisher: &message.publisher,
            payload: &message.payload,
            topic_hash,
            // No `ordered_by` in a scenario: the key is the topic, as in a group without one.
            key_hash: topic_hash,
            publisher_hash: if message.publisher.is_empty() {
                0
            } else {
                key_hash(message.publisher.as_bytes())
            },
            qos: message.qos,
            retain: false,
            user_properties: &message.properties,
            content_type: message.content_type.as_deref(),
        };
        // The instance leaves out what `init` did not ask for, as for the broker.
        let call = self
            .instance
            .as_ref()
            .map_or("select", |i| i.needs.select_call());
        match self.try_call(|i| i.select(&view)) {
            Ok(None) => Outcome::Fallback,
            Ok(Some(id)) => match self.members.iter().find(|m| m.info.id == id) {
                None => Outcome::Invalid(id),
                Some(m) if !m.load.online => Outcome::Unavailable(id, "offline"),
                Some(m) if !m.load.has_room() => Outcome::Unavailable(id, "full"),
                Some(_) => Outcome::Member(id),
            },
            Err(e) => Outcome::Failed(format!("{call} failed: {e}")),
        }
    }

    fn describe(&self, outcome: &Outcome) -> String {
        match outcome {
            Outcome::Member(id) => format!("went to {}", self.name(*id)),
            Outcome::Fallback => "was declined (fallback)".to_owned(),
            Outcome::Queued => "waited in the group queue (no member has room)".to_owned(),
            Outcome::Invalid(id) => format!("got an invalid answer: {id} is no member's id"),
            Outcome::Unavailable(id, why) => format!(
                "chose {} which is {why} (the broker would spill/fall back)",
                self.name(*id)
            ),
            Outcome::Failed(e) => e.clone(),
        }
    }

    /// Strategy faults, whatever the expectation: the first of each kind, with its count.
    fn faults(&self, outcomes: &[Outcome]) -> Vec<String> {
        let mut firsts: Vec<(usize, &Outcome, usize)> = Vec::new();
        for (n, outcome) in outcomes.iter().enumerate().filter(|(_, o)| o.is_fault()) {
            let kind = std::mem::discriminant(outcome);
            match firsts
                .iter_mut()
                .find(|(_, first, _)| std::mem::discriminant(*first) == kind)
            {
                Some((_, _, count)) => *count += 1,
                None => firsts.push((n, outcome, 1)),
            }
        }
        firsts
            .into_iter()
            .map(|(n, outcome, count)| {
                format!(
                    "message {n} {} ({count} of {} messages)",
                    self.describe(outcome),
                    outcomes.len()
                )
            })
            .collect()
    }

    fn expect_all(
        &self,
        outcomes: &[Outcome],
        expected: Option<Outcome>,
        label: &str,
    ) -> Option<String> {
        let wrong: Vec<usize> = outcomes
            .iter()
            .enumerate()
            .filter(|(_, o)| Some(*o) != expected.as_ref())
            .map(|(n, _)| n)
            .collect();
        let first = *wrong.first()?;
        Some(format!(
            "message {first} {}, expected {label} ({} of {} wrong)",
            self.describe(&outcomes[first]),
            wrong.len(),
            outcomes.len()
        ))
    }

    fn expect_even(&self, outcomes: &[Outcome], pct: f64) -> Option<String> {
        let eligible: Vec<&SimMember> = self.members.iter().filter(|m| m.load.has_room()).collect();
        if eligible.is_empty() {
            return Some("expect_even: no member is online with room".to_owned());
        }
        let share = outcomes.len() as f64 / eligible.len() as f64;
        let slack = share * pct / 100.0;
        let counts: Vec<(String, usize)> = eligible
            .iter()
            .map(|m| {
                let got = outcomes
                    .iter()
                    .filter(|o| o.landing() == Some(m.info.id))
                    .count();
                (m.info.client_id.to_string(), got)
            })
            .collect();
        let uneven = counts
            .iter()
            .any(|(_, got)| (*got as f64 - share).abs() > slack);
        uneven.then(|| {
            let got: Vec<String> = counts.iter().map(|(c, n)| format!("{c} {n}")).collect();
            format!(
                "uneven: {} of {} messages; an even share is {share:.1} ± {pct}% ({:.1} to {:.1})",
                got.join(", "),
                outcomes.len(),
                share - slack,
                share + slack
            )
        })
    }

    /// Where a publish step's messages went: per member, and declined/queued when any.
    fn spread(&self, outcomes: &[Outcome]) -> String {
        let mut per_member: BTreeMap<u64, usize> = BTreeMap::new();
        let (mut declined, mut queued) = (0, 0);
        for outcome in outcomes {
            match outcome {
                Outcome::Member(id) => *per_member.entry(*id).or_default() += 1,
                Outcome::Fallback => declined += 1,
                Outcome::Queued => queued += 1,
                _ => {}
            }
        }
        let mut parts: Vec<String> = per_member
            .iter()
            .map(|(id, n)| format!("{} {n}", self.name(*id)))
            .collect();
        if declined > 0 {
            parts.push(format!("{declined} declined"));
        }
        if queued > 0 {
            parts.push(format!("{queued} queued"));
        }
        parts.join(", ")
    }

    /// Re-dispatches the last publish step's messages and compares where they land. The
    /// replay counts toward nothing else: the step's baseline stays what it was.
    fn moved(&mut self, pct: f64) -> Result<String, Vec<String>> {
        let Some((number, batch, before)) = self.last_publish.take() else {
            return Err(vec!["no publish step before it".to_owned()]);
        };
        let after: Vec<Outcome> = batch.iter().map(|m| self.dispatch(m)).collect();
        // Only failed calls are reported from the replay; other outcomes serve the count.
        let failed_calls: Vec<Outcome> = after
            .iter()
            .map(|o| match o {
                Outcome::Failed(_) => o.clone(),
                _ => Outcome::Fallback,
            })
            .collect();
        let mut problems = self.faults(&failed_calls);
        let moved = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| b.landing() != a.landing())
            .count();
        let share = moved as f64 * 100.0 / batch.len().max(1) as f64;
        let summary = format!(
            "{moved} of {} messages of step {number} moved ({share:.1}%)",
            batch.len()
        );
        self.last_publish = Some((number, batch, before));
        if share > pct {
            problems.push(format!("{summary}, at most {pct}% may"));
        }
        if problems.is_empty() {
            Ok(summary)
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_expand_per_message() {
        let publish = Publish {
            topic: "jobs/{n}".into(),
            publisher: "p{n}".into(),
            payload: "x{n}{n}".into(),
            properties: [("tenant".to_owned(), "t-{n}".to_owned())].into(),
            content_type: Some("text/{n}".into()),
            qos: 0,
            count: 3,
        };
        let batch = messages(&publish);
        assert_eq!(batch.len(), 3);
        assert_eq!(batch[2].topic, "jobs/2");
        assert_eq!(batch[2].publisher, "p2");
        assert_eq!(batch[2].payload, b"x22");
        assert_eq!(batch[1].properties, vec![("tenant".into(), "t-1".into())]);
        // Content types are not templates.
        assert_eq!(batch[1].content_type.as_deref(), Some("text/{n}"));
    }
}
