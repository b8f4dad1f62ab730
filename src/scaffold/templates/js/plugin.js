// {{name}}: a sharq dispatch strategy in JavaScript (contract sharq:dispatch@0.2.0, world
// `strategy`).
//
// - A message whose PUBLISH has the user property `tenant` goes to the candidate with the
//   highest score(tenant, member client id): rendezvous hashing. One tenant's messages stick to
//   one member, and a member joining or leaving moves only the tenants it wins or loses.
// - A message without `tenant` goes round robin over the candidates.
// - Candidates: the online members with room in their window; when none has room, every online
//   member. With none online we decline and the broker's own round robin decides.
//
// componentize-js maps the WIT to JavaScript: u64 member ids are BigInt, an `option` is a value
// or `undefined`, flags are an object of booleans, records are objects with camelCase fields,
// and throwing from `init` answers `err`.

// One instance serves one group and is never called concurrently: module state is its state.
let members = new Map(); // member id (BigInt) -> { clientId, online, full }
let roundRobin = 0; // how many untagged messages we have placed

const encoder = new TextEncoder();

// 32-bit FNV-1a, continued from `hash`. Math.imul keeps the multiplication in 32 bits.
function fnv1a(hash, bytes) {
  for (const byte of bytes) hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  return hash;
}

// The rendezvous score of a member for a tenant.
function score(tenant, clientId) {
  let h = fnv1a(0x811c9dc5, encoder.encode(tenant));
  // A 0 byte between the two, so that ("ab", "c") and ("a", "bc") score differently.
  h = fnv1a(h, [0]);
  h = fnv1a(h, encoder.encode(clientId));
  // murmur3's finaliser: FNV-1a mixes the last bytes poorly, and client ids often differ only
  // there (worker-1, worker-2).
  h = (h ^ (h >>> 16)) >>> 0;
  h = Math.imul(h, 0x85ebca6b) >>> 0;
  h = (h ^ (h >>> 13)) >>> 0;
  h = Math.imul(h, 0xc2b2ae35) >>> 0;
  h = (h ^ (h >>> 16)) >>> 0;
  return h;
}

// Online members with room, in id order; every online member when none has room.
function candidates() {
  const ids = [...members.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const online = ids.filter((id) => members.get(id).online);
  const withRoom = online.filter((id) => !members.get(id).full);
  return withRoom.length > 0 ? withRoom : online;
}

export const selectMember = {
  init(_group, _params) {
    // We accept any params; `throw "why"` refuses a configuration.
    // The host may rebuild an instance at any time: start from nothing.
    members = new Map();
    roundRobin = 0;
    // Only the user properties: the host then copies no topic or payload into us.
    return {
      topic: false,
      publisher: false,
      payload: false,
      userProperties: true,
      contentType: false,
    };
  },

  memberJoined(m) {
    // Offline until the member-load that follows.
    if (!members.has(m.id)) members.set(m.id, { clientId: m.clientId, online: false, full: false });
  },

  memberLeft(id) {
    members.delete(id);
  },

  memberLoad(id, inflight, capacity, online) {
    const member = members.get(id);
    if (member !== undefined) {
      member.online = online;
      member.full = inflight >= capacity;
    }
  },

  select(_meta) {
    // init asks for user properties, so the host calls selectFull instead.
    return undefined;
  },

  selectFull(msg, _meta) {
    const ids = candidates();
    if (ids.length === 0) return undefined;
    const property = msg.userProperties.find(([key]) => key === "tenant");
    if (property !== undefined) {
      const tenant = property[1];
      let best = ids[0];
      let bestScore = score(tenant, members.get(best).clientId);
      for (const id of ids.slice(1)) {
        const s = score(tenant, members.get(id).clientId);
        // Strictly greater: on a tie the lower id wins.
        if (s > bestScore) {
          best = id;
          bestScore = s;
        }
      }
      return best;
    }
    const chosen = ids[roundRobin % ids.length];
    roundRobin += 1;
    return chosen;
  },
};
