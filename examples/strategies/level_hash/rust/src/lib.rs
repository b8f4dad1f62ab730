//! level_hash in Rust: hash on a chosen topic level, skip members whose window is full.
//! The algorithm is specified in `../README.md`; the C, Python and JavaScript versions next to
//! this one implement it identically.

use std::cell::RefCell;
use std::collections::BTreeMap;

use exports::sharq::dispatch::select_member::{Guest, Member, MemberId, MsgMeta, Needs};

wit_bindgen::generate!({ world: "strategy", path: "../../../../wit" });

#[derive(Default, Clone, Copy)]
struct MemberState {
    online: bool,
    full: bool,
}

#[derive(Default)]
struct State {
    level: usize,
    /// Ordered by id, which is the candidate order the algorithm specifies.
    members: BTreeMap<MemberId, MemberState>,
}

thread_local! {
    // A component instance is single-threaded and never re-entered: a RefCell suffices.
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// 32-bit FNV-1a: chosen because every language can write it in three lines.
fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

fn key(topic: &str, level: usize) -> &str {
    topic.split('/').nth(level).unwrap_or(topic)
}

struct LevelHash;

impl Guest for LevelHash {
    fn init(_group: String, params: Vec<(String, String)>) -> Result<Needs, String> {
        let mut level = 0;
        for (name, value) in params {
            match name.as_str() {
                "level" => {
                    level = value.parse::<usize>().map_err(|_| {
                        format!("param `level` must be a non-negative integer, got `{value}`")
                    })?
                }
                other => return Err(format!("unknown param `{other}` (accepted: `level`)")),
            }
        }
        STATE.with(|s| {
            *s.borrow_mut() = State {
                level,
                members: BTreeMap::new(),
            }
        });
        Ok(Needs::TOPIC)
    }

    fn member_joined(m: Member) {
        STATE.with(|s| {
            s.borrow_mut().members.insert(m.id, MemberState::default());
        });
    }

    fn member_left(id: MemberId) {
        STATE.with(|s| {
            s.borrow_mut().members.remove(&id);
        });
    }

    fn member_load(id: MemberId, inflight: u32, capacity: u32, online: bool) {
        STATE.with(|s| {
            if let Some(member) = s.borrow_mut().members.get_mut(&id) {
                member.online = online;
                member.full = inflight >= capacity;
            }
        });
    }

    fn select(_m: MsgMeta) -> Option<MemberId> {
        // init asks for the topic, so the host only ever calls select-full.
        None
    }

    fn select_full(
        topic: String,
        _publisher: String,
        _payload: Option<Vec<u8>>,
        _m: MsgMeta,
    ) -> Option<MemberId> {
        STATE.with(|s| {
            let state = s.borrow();
            let candidates: Vec<(MemberId, MemberState)> = state
                .members
                .iter()
                .filter(|(_, m)| m.online)
                .map(|(id, m)| (*id, *m))
                .collect();
            if candidates.is_empty() {
                return None;
            }
            let n = candidates.len();
            let start = fnv1a32(key(&topic, state.level).as_bytes()) as usize % n;
            (0..n)
                .map(|i| candidates[(start + i) % n])
                .find(|(_, m)| !m.full)
                .map(|(id, _)| id)
        })
    }
}

export!(LevelHash);
