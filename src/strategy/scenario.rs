//! `sharq plugin test`: a scenario file (a simulated group, the steps that happen to it, and
//! what the strategy must do at each) parsed and replayed against a component, the way the
//! broker would drive it.
//!
//! The format (TOML; documented for authors in `docs/plugins.md` and the scaffold's
//! `scenario.toml`):
//!
//! ```toml
//! group = "workers"          # handed to init (default "scenario")
//! params = { key = "value" } # handed to init
//! wasi = false               # serve WASI imports from an empty context
//!
//! [[step]]
//! join = { client = "a", weight = 1, properties = { k = "v" } }
//! [[step]]
//! publish = { topic = "t/{n}", publisher = "p", payload = "", properties = {}, content_type = "x", qos = 1, count = 10 }
//! expect = "a"               # or "fallback", or expect_even = PERCENT
//! [[step]]
//! load = { client = "a", state = "full" }   # full | room | offline | online
//! [[step]]
//! leave = "a"                # join and leave steps may carry expect_moved_at_most = PERCENT
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use bytestring::ByteString;
use serde::Deserialize;

use super::wasm::Plugin;
use super::{
    key_hash, MemberInfo, MemberLoad, MessageView, SandboxLimits, StrategyError, WasmHost,
    WasmInstance,
};

/// A member's window in the simulation: what `join` reports, and what `full` fills.
const CAPACITY: u32 = 64;

/// Why a scenario could not be run at all (as opposed to a strategy failing it).
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("scenario: {0}")]
    Parse(String),
    #[error("scenario step {step}: {message}")]
    Step { step: usize, message: String },
    /// The component cannot be loaded or `init` refused the scenario's group and params.
    #[error(transparent)]
    Plugin(#[from] StrategyError),
}

/// A parsed scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub group: String,
    pub params: Vec<(String, String)>,
    pub wasi: bool,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub action: Action,
    pub expect: Option<Expectation>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Join(Join),
    Load(Load),
    Leave(String),
    Publish(Publish),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expectation {
    /// Every message goes to this client.
    Client(String),
    /// The strategy declines every message (the broker's round robin places them).
    Fallback,
    /// Each online member with room gets within this percentage of an even share.
    Even(f64),
    /// Re-dispatching the previous publish step's messages moves at most this percentage.
    MovedAtMost(f64),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Join {
    pub client: String,
    #[serde(default = "one")]
    pub weight: u32,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    pub client: String,
    pub state: LoadState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadState {
    /// Online with a full window.
    Full,
    /// Online with an empty window.
    Room,
    /// Offline; the window is kept.
    Offline,
    /// Online again; the window is kept.
    Online,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    #[serde(default = "default_topic")]
    pub topic: String,
    #[serde(default = "default_publisher")]
    pub publisher: String,
    #[serde(default)]
    pub payload: String,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default = "one_u8")]
    pub qos: u8,
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}
fn one_u8() -> u8 {
    1
}
fn default_topic() -> String {
    "t".to_owned()
}
fn default_publisher() -> String {
    "p".to_owned()
}
fn default_group() -> String {
    "scenario".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    #[serde(default = "default_group")]
    group: String,
    #[serde(default)]
    params: BTreeMap<String, String>,
    #[serde(default)]
    wasi: bool,
    /// Parsed one by one, so an error names its step.
    #[serde(default)]
    step: Vec<toml::Table>,
}

const STEP_KEYS: &str = "join, load, leave, publish, expect, expect_even, expect_moved_at_most";

impl Scenario {
    pub fn from_file(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Scenario::parse(&text)
    }

    /// Parses and checks a scenario: every step does one thing, its expectation fits it, and
    /// the clients it names are members at that point (so a run fails only on the strategy).
    pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        let raw: RawScenario =
            toml::from_str(text).map_err(|e| ScenarioError::Parse(e.to_string()))?;
        if raw.step.is_empty() {
            return Err(ScenarioError::Parse("no [[step]]".to_owned()));
        }
        let mut steps = Vec::with_capacity(raw.step.len());
        let mut members = BTreeSet::new();
        let mut published = false;
        for (index, table) in raw.step.into_iter().enumerate() {
            let number = index + 1;
            let step = parse_step(table).map_err(|message| ScenarioError::Step {
                step: number,
                message,
            })?;
            validate(&step, &mut members, published).map_err(|message| ScenarioError::Step {
                step: number,
                message,
            })?;
            published |= matches!(step.action, Action::Publish(_));
            steps.push(step);
        }
        Ok(Scenario {
            group: raw.group,
            params: raw.params.into_iter().collect(),
            wasi: raw.wasi,
            steps,
        })
    }
}

/// What one key of a step is.
enum Part {
    Action(Action),
    Expect(Expectation),
}

/// One `[[step]]` table, key by key so that an error names the key.
fn parse_step(table: toml::Table) -> Result<Step, String> {
    let mut action: Option<(String, Action)> = None;
    let mut expect: Option<(String, Expectation)> = None;
    for (key, value) in table {
        let bad = |e: toml::de::Error| format!("`{key}`: {}", e.to_string().trim_end());
        let parsed = match key.as_str() {
            "join" => Part::Action(Action::Join(value.try_into().map_err(bad)?)),
            "load" => Part::Action(Action::Load(value.try_into().map_err(bad)?)),
            "leave" => Part::Action(Action::Leave(value.try_into().map_err(bad)?)),
            "publish" => Part::Action(Action::Publish(value.try_into().map_err(bad)?)),
            "expect" => Part::Expect(match value.try_into::<String>().map_err(bad)? {
                client if client == "fallback" => Expectation::Fallback,
                client => Expectation::Client(client),
            }),
            "expect_even" => Part::Expect(Expectation::Even(percent(&key, value)?)),
            "expect_moved_at_most" => Part::Expect(Expectation::MovedAtMost(percent(&key, value)?)),
            _ => return Err(format!("unknown key `{key}` (known: {STEP_KEYS})")),
        };
        match parsed {
            Part::Action(parsed) => {
                if let Some((first, _)) = &action {
                    return Err(format!(
                        "has both `{first}` and `{key}`; a step does one thing"
                    ));
                }
                action = Some((key, parsed));
            }
            Part::Expect(parsed) => {
                if let Some((first, _)) = &expect {
                    return Err(format!(
                        "has both `{first}` and `{key}`; a step has one expectation"
                    ));
                }
                expect = Some((key, parsed));
            }
        }
    }
    let Some((action_key, action)) = action else {
        return Err("needs one of `join`, `load`, `leave`, `publish`".to_owned());
    };
    if let Some((key, expectation)) = &expect {
        let fits = match expectation {
            Expectation::Client(_) | Expectation::Fallback | Expectation::Even(_) => {
                matches!(action, Action::Publish(_))
            }
            Expectation::MovedAtMost(_) => matches!(action, Action::Join(_) | Action::Leave(_)),
        };
        if !fits {
            return Err(format!("`{key}` does not apply to a `{action_key}` step"));
        }
    }
    Ok(Step {
        action,
        expect: expect.map(|(_, e)| e),
    })
}

fn percent(key: &str, value: toml::Value) -> Result<f64, String> {
    let pct = match value {
        toml::Value::Integer(i) => i as f64,
        toml::Value::Float(f) => f,
        other => {
            return Err(format!(
                "`{key}`: expected a percentage (a number), got {}",
                other.type_str()
            ))
        }
    };
    if !(0.0..=100.0).contains(&pct) {
        return Err(format!("`{key}`: {pct} is not a percentage (0 to 100)"));
    }
    Ok(pct)
}

/// Checks a step against the membership before it, and applies its joins and leaves.
fn validate(step: &Step, members: &mut BTreeSet<String>, published: bool) -> Result<(), String> {
    let need_member = |key: &str, client: &str, members: &BTreeSet<String>| {
        if members.contains(client) {
            Ok(())
        } else {
            Err(format!("`{key}`: {client} is not a member at this step"))
        }
    };
    match &step.action {
        Action::Join(join) => {
            if !members.insert(join.client.clone()) {
                return Err(format!("`join`: {} is already a member", join.client));
            }
        }
        Action::Load(load) => need_member("load", &load.client, members)?,
        Action::Leave(client) => {
            need_member("leave", client, members)?;
            members.remove(client);
        }
        Action::Publish(publish) => {
            if publish.count == 0 {
                return Err("`publish`: count must be at least 1".to_owned());
            }
            if publish.qos > 2 {
                return Err(format!("`publish`: qos {} is not 0, 1 or 2", publish.qos));
            }
        }
    }
    match &step.expect {
        Some(Expectation::Client(client)) => need_member("expect", client, members),
        Some(Expectation::MovedAtMost(_)) if !published => {
            Err("`expect_moved_at_most`: no publish step before it to re-dispatch".to_owned())
        }
        _ => Ok(()),
    }
}

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

/// The result of a run: one line per step, and the counts of the summary.
#[derive(Debug, Clone, Default)]
pub struct ScenarioReport {
    /// The contract version the component implements.
    pub contract: &'static str,
    pub lines: Vec<String>,
    pub steps: usize,
    pub expectations: usize,
    /// Steps that failed: an expectation not met, or a strategy fault (a failed call, an
    /// invalid answer, a full or offline member chosen) even without an expectation.
    pub failed: usize,
}

impl ScenarioReport {
    pub fn passed(&self) -> bool {
        self.failed == 0
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(
            out,
            "{} steps, {} expectations, {} failed",
            self.steps, self.expectations, self.failed
        );
        out
    }
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

    const LIMITS: SandboxLimits = SandboxLimits {
        memory_bytes: 16 << 20,
        // Generous: a loaded test machine must not turn a healthy call into a timeout.
        deadline_ticks: 5000,
        init_deadline_ticks: 5000,
    };

    fn builtin(name: &str) -> &'static [u8] {
        crate::strategy::builtin::component(name).unwrap()
    }

    #[test]
    fn parses_defaults_and_expectations() {
        let s = Scenario::parse(
            r#"
            params = { a = "1" }
            [[step]]
            join = { client = "w1", properties = { zone = "eu" } }
            [[step]]
            publish = { count = 3 }
            expect = "w1"
            [[step]]
            join = { client = "w2", weight = 2 }
            expect_moved_at_most = 50
            [[step]]
            load = { client = "w1", state = "full" }
            [[step]]
            publish = {}
            expect = "fallback"
            [[step]]
            leave = "w2"
            "#,
        )
        .unwrap();
        assert_eq!(s.group, "scenario");
        assert_eq!(s.params, vec![("a".to_owned(), "1".to_owned())]);
        assert!(!s.wasi);
        assert_eq!(s.steps.len(), 6);
        let Action::Publish(p) = &s.steps[1].action else {
            panic!("{:?}", s.steps[1]);
        };
        assert_eq!((p.topic.as_str(), p.publisher.as_str()), ("t", "p"));
        assert_eq!((p.qos, p.count), (1, 3));
        assert_eq!(s.steps[1].expect, Some(Expectation::Client("w1".into())));
        assert_eq!(s.steps[2].expect, Some(Expectation::MovedAtMost(50.0)));
        assert_eq!(s.steps[4].expect, Some(Expectation::Fallback));
        assert_eq!(s.steps[5].action, Action::Leave("w2".into()));
    }

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

    fn parse_error(text: &str) -> String {
        Scenario::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_step_and_the_key() {
        let e =
            parse_error("[[step]]\njoin = { client = \"a\" }\n[[step]]\npublish = { cuont = 3 }\n");
        assert!(
            e.contains("step 2") && e.contains("`publish`") && e.contains("cuont"),
            "{e}"
        );
        let e = parse_error("[[step]]\njoin = { client = \"a\" }\nexpct = \"a\"\n");
        assert!(
            e.contains("step 1") && e.contains("unknown key `expct`"),
            "{e}"
        );
        let e = parse_error("[[step]]\njoin = { client = \"a\" }\n[[step]]\nload = { client = \"a\", state = \"busy\" }\n");
        assert!(
            e.contains("step 2") && e.contains("`load`") && e.contains("busy"),
            "{e}"
        );
        let e = parse_error("[[step]]\nleave = \"ghost\"\n");
        assert!(
            e.contains("step 1") && e.contains("ghost is not a member"),
            "{e}"
        );
        let e = parse_error("[[step]]\njoin = { client = \"a\" }\nleave = \"a\"\n");
        assert!(e.contains("a step does one thing"), "{e}");
        let e = parse_error("[[step]]\njoin = { client = \"a\" }\nexpect = \"a\"\n");
        assert!(
            e.contains("`expect` does not apply to a `join` step"),
            "{e}"
        );
        let e = parse_error("[[step]]\njoin = { client = \"a\" }\nexpect_moved_at_most = 10\n");
        assert!(e.contains("no publish step before it"), "{e}");
        let e = parse_error("grup = \"g\"\n[[step]]\nleave = \"a\"\n");
        assert!(e.contains("grup"), "{e}");
        let e = parse_error(
            "[[step]]\njoin = { client = \"a\" }\n[[step]]\npublish = {}\nexpect_even = \"lots\"\n",
        );
        assert!(e.contains("step 2") && e.contains("`expect_even`"), "{e}");
    }

    fn run_text(name: &str, text: &str) -> ScenarioReport {
        let scenario = Scenario::parse(text).unwrap();
        run(name, builtin(name), &scenario, LIMITS, false).unwrap()
    }

    #[test]
    fn round_robin_passes_an_even_scenario() {
        let report = run_text(
            "round_robin",
            r#"
            [[step]]
            join = { client = "a" }
            [[step]]
            join = { client = "b" }
            [[step]]
            publish = { topic = "t/{n}", count = 100 }
            expect_even = 2
            [[step]]
            load = { client = "a", state = "full" }
            [[step]]
            publish = { count = 10 }
            expect = "b"
            "#,
        );
        assert!(report.passed(), "{}", report.render());
        assert_eq!(report.contract, "0.2.0");
        assert_eq!((report.steps, report.expectations), (5, 2));
        assert!(
            report.lines[2].contains("a 50, b 50"),
            "{}",
            report.render()
        );
    }

    #[test]
    fn wrong_expectation_names_message_and_counts() {
        let report = run_text(
            "hash_clientid",
            r#"
            [[step]]
            join = { client = "a" }
            [[step]]
            join = { client = "b" }
            [[step]]
            publish = { publisher = "pub-{n}", count = 40 }
            expect = "a"
            "#,
        );
        assert_eq!(report.failed, 1, "{}", report.render());
        let line = &report.lines[2];
        assert!(
            line.starts_with("step 3 publish 40 messages: FAILED: message "),
            "{line}"
        );
        assert!(line.contains("went to b, expected a ("), "{line}");
        assert!(line.contains(" of 40 wrong)"), "{line}");
    }

    #[test]
    fn full_member_chosen_and_moves_are_failures() {
        // hash_clientid keeps a publisher on its member even when full: the broker would spill.
        let report = run_text(
            "hash_clientid",
            r#"
            [[step]]
            join = { client = "a" }
            [[step]]
            load = { client = "a", state = "full" }
            [[step]]
            join = { client = "b" }
            [[step]]
            publish = { publisher = "pub-{n}", count = 20 }
            "#,
        );
        assert_eq!(report.failed, 1, "{}", report.render());
        assert!(
            report.lines[3].contains("chose a which is full (the broker would spill/fall back)"),
            "{}",
            report.render()
        );

        let report = run_text(
            "round_robin",
            r#"
            [[step]]
            join = { client = "a" }
            [[step]]
            join = { client = "b" }
            [[step]]
            publish = { count = 10 }
            [[step]]
            join = { client = "c" }
            expect_moved_at_most = 0
            "#,
        );
        assert_eq!(report.failed, 1, "{}", report.render());
        assert!(
            report.lines[3].contains("of step 3 moved"),
            "{}",
            report.render()
        );
    }
}
