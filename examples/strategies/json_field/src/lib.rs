//! An example sharq dispatch strategy, written as a plugin author would: route each message
//! by one field of its JSON payload, so that every message about, say, one device reaches the
//! same member.
//!
//! Params: `field` (required), the name of a top-level field of the payload. A string value
//! is the key as it is; a number or boolean as its JSON text. Messages whose payload is not a
//! JSON object, or lacks the field, get `none`, and the host's round robin delivers them.
//!
//! Placement is rendezvous hashing over the online members: when a member joins or leaves,
//! only about 1/n of the keys move.

use std::cell::RefCell;
use std::collections::BTreeMap;

use exports::sharq::dispatch::select_member::{Guest, Member, MemberId, MsgMeta, Needs};
use xxhash_rust::xxh3::xxh3_64;

wit_bindgen::generate!({ world: "strategy", path: "../../../wit" });

struct MemberInfo {
    /// Identity for hashing: the client id's hash rather than the member id, so a client
    /// that reconnects with a new session gets its keys back.
    client_hash: u64,
    online: bool,
}

#[derive(Default)]
struct State {
    field: String,
    /// A BTreeMap, not a HashMap: iteration order, and so tie-breaking, must not depend on
    /// a random hasher seed, because the host may rebuild the instance at any time.
    members: BTreeMap<MemberId, MemberInfo>,
}

thread_local! {
    // A component instance is single-threaded and never re-entered: a RefCell suffices.
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// The bytes the message is placed by, or `None` when the payload does not carry the field.
fn key_of(payload: &[u8], field: &str) -> Option<Vec<u8>> {
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    match value.get(field)? {
        serde_json::Value::String(s) => Some(s.as_bytes().to_vec()),
        v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)) => {
            Some(v.to_string().into_bytes())
        }
        // null, arrays and objects make poor keys; treat them as absent.
        _ => None,
    }
}

fn score(key: u64, member: u64) -> u64 {
    let mut buf = [0u8; 16];
    buf[..8].copy_from_slice(&key.to_le_bytes());
    buf[8..].copy_from_slice(&member.to_le_bytes());
    xxh3_64(&buf)
}

struct JsonField;

impl Guest for JsonField {
    fn init(_group: String, params: Vec<(String, String)>) -> Result<Needs, String> {
        let mut field = None;
        for (k, v) in params {
            match k.as_str() {
                "field" if !v.is_empty() => field = Some(v),
                "field" => return Err("param `field` must not be empty".into()),
                other => return Err(format!("unknown param `{other}` (accepted: `field`)")),
            }
        }
        let field = field.ok_or("param `field` is required, e.g. field = \"device\"")?;
        STATE.with(|s| {
            *s.borrow_mut() = State {
                field,
                members: BTreeMap::new(),
            }
        });
        Ok(Needs::PAYLOAD)
    }

    fn member_joined(m: Member) {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            let online = s.members.get(&m.id).is_some_and(|i| i.online);
            s.members.insert(
                m.id,
                MemberInfo {
                    client_hash: xxh3_64(m.client_id.as_bytes()),
                    online,
                },
            );
        });
    }

    fn member_left(id: MemberId) {
        STATE.with(|s| s.borrow_mut().members.remove(&id));
    }

    fn member_load(id: MemberId, _inflight: u32, _capacity: u32, online: bool) {
        STATE.with(|s| {
            if let Some(m) = s.borrow_mut().members.get_mut(&id) {
                m.online = online;
            }
        });
    }

    fn select(_m: MsgMeta) -> Option<MemberId> {
        // Only reached if the host ignores our needs: without the payload there is no key.
        None
    }

    fn select_full(
        _topic: String,
        _publisher: String,
        payload: Option<Vec<u8>>,
        _m: MsgMeta,
    ) -> Option<MemberId> {
        STATE.with(|s| {
            let s = s.borrow();
            let key = xxh3_64(&key_of(payload.as_deref()?, &s.field)?);
            s.members
                .iter()
                .filter(|(_, m)| m.online)
                .map(|(id, m)| (score(key, m.client_hash), *id))
                .max()
                .map(|(_, id)| id)
        })
    }
}

export!(JsonField);

#[cfg(test)]
mod tests {
    use super::key_of;

    #[test]
    fn keys() {
        assert_eq!(
            key_of(br#"{"device":"d-7","t":1}"#, "device"),
            Some(b"d-7".to_vec())
        );
        assert_eq!(key_of(br#"{"device":42}"#, "device"), Some(b"42".to_vec()));
        assert_eq!(key_of(br#"{"other":1}"#, "device"), None);
        assert_eq!(key_of(br#"{"device":null}"#, "device"), None);
        assert_eq!(key_of(b"not json", "device"), None);
        assert_eq!(key_of(br#"["device"]"#, "device"), None);
    }
}
