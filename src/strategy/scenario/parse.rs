//! Reading a scenario file: each step key by key, so that an error names the step and the key,
//! and checked so that a run can fail only on the strategy.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

use super::{default_group, Action, Expectation, Scenario, ScenarioError, Step};

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
