// level_hash in JavaScript: hash on a chosen topic level, skip members whose window is full.
// The algorithm is specified in ../README.md; the Rust, C and Python versions next to this one
// implement it identically. componentize-js maps the WIT to JS: u64 ids are BigInt, `option`
// is a value or `undefined`, flags are an object of booleans, and throwing from a function
// returning `result` makes it answer `err`.

// One instance serves one group and is never re-entered: module state is the instance's.
let level = 0;
// id (BigInt) -> { online, full }
let members = new Map();

const encoder = new TextEncoder();

function fnv1a32(bytes) {
  let h = 0x811c9dc5;
  for (const byte of bytes) {
    // Math.imul keeps the multiplication in 32 bits, as in the other languages.
    h = Math.imul(h ^ byte, 0x01000193) >>> 0;
  }
  return h;
}

function key(topic) {
  const parts = topic.split("/");
  return level < parts.length ? parts[level] : topic;
}

export const selectMember = {
  init(group, params) {
    let chosen = 0;
    for (const [name, value] of params) {
      if (name !== "level") {
        throw `unknown param \`${name}\` (accepted: \`level\`)`;
      }
      if (!/^[0-9]+$/.test(value)) {
        throw `param \`level\` must be a non-negative integer, got \`${value}\``;
      }
      chosen = Number(value);
    }
    level = chosen;
    members = new Map();
    return { topic: true, publisher: false, payload: false };
  },

  memberJoined(m) {
    members.set(m.id, { online: false, full: false });
  },

  memberLeft(id) {
    members.delete(id);
  },

  memberLoad(id, inflight, capacity, online) {
    const state = members.get(id);
    if (state !== undefined) {
      state.online = online;
      state.full = inflight >= capacity;
    }
  },

  select(_meta) {
    // init asks for the topic, so the host only ever calls selectFull.
    return undefined;
  },

  selectFull(topic, _publisher, _payload, _meta) {
    const candidates = [];
    for (const [id, state] of members) {
      if (state.online) candidates.push(id);
    }
    const n = candidates.length;
    if (n === 0) return undefined;
    candidates.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const start = fnv1a32(encoder.encode(key(topic))) % n;
    for (let i = 0; i < n; i++) {
      const candidate = candidates[(start + i) % n];
      if (!members.get(candidate).full) return candidate;
    }
    return undefined;
  },
};
