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

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;

use super::StrategyError;

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

mod parse;
mod simulation;

pub use simulation::run;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::SandboxLimits;

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
