// {{name}}: a sharq dispatch strategy in C (contract sharq:dispatch@0.2.0, world `strategy`).
//
// - A message whose PUBLISH has the user property `tenant` goes to the candidate with the
//   highest score(tenant, member client id): rendezvous hashing. One tenant's messages stick to
//   one member, and a member joining or leaving moves only the tenants it wins or loses.
// - A message without `tenant` goes round robin over the candidates.
// - Candidates: the online members with room in their window; when none has room, every online
//   member. With none online we decline and the broker's own round robin decides.
//
// build.sh generates the bindings (strategy.h, strategy.c) from wit/ with `wit-bindgen c`.

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "strategy.h"

typedef exports_sharq_dispatch_select_member_member_id_t member_id_t;

typedef struct {
    member_id_t id;
    strategy_string_t client_id;
    bool online;
    bool full;
} member_t;

// One instance serves one group and is never called concurrently: globals are its state.
static member_t *members; // kept sorted by id, so every language walks them in the same order
static size_t member_count;
static size_t member_capacity;
static uint64_t round_robin; // how many untagged messages we have placed

// 32-bit FNV-1a, continued from `hash`.
static uint32_t fnv1a(uint32_t hash, const uint8_t *bytes, size_t len) {
    for (size_t i = 0; i < len; i++) hash = (hash ^ bytes[i]) * 0x01000193u;
    return hash;
}

// The rendezvous score of a member for a tenant.
static uint32_t score(const strategy_string_t *tenant, const strategy_string_t *client_id) {
    uint32_t h = fnv1a(0x811c9dc5u, tenant->ptr, tenant->len);
    // A 0 byte between the two, so that ("ab", "c") and ("a", "bc") score differently.
    h = fnv1a(h, (const uint8_t *)"", 1);
    h = fnv1a(h, client_id->ptr, client_id->len);
    // murmur3's finaliser: FNV-1a mixes the last bytes poorly, and client ids often differ only
    // there (worker-1, worker-2).
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

static member_t *find(member_id_t id) {
    for (size_t i = 0; i < member_count; i++) {
        if (members[i].id == id) return &members[i];
    }
    return NULL;
}

bool exports_sharq_dispatch_select_member_init(
    strategy_string_t *group, strategy_list_tuple2_string_string_t *params,
    exports_sharq_dispatch_select_member_needs_t *ret, strategy_string_t *err) {
    (void)err; // we accept any params; set *err and return false to refuse a configuration
    // Arguments belong to the callee in the canonical ABI: free what we do not keep.
    strategy_string_free(group);
    strategy_list_tuple2_string_string_free(params);
    // The host may rebuild an instance at any time: start from nothing.
    for (size_t i = 0; i < member_count; i++) strategy_string_free(&members[i].client_id);
    member_count = 0;
    round_robin = 0;
    // Only the user properties: the host then copies no topic or payload into us.
    *ret = EXPORTS_SHARQ_DISPATCH_SELECT_MEMBER_NEEDS_USER_PROPERTIES;
    return true;
}

void exports_sharq_dispatch_select_member_member_joined(
    exports_sharq_dispatch_select_member_member_t *m) {
    if (find(m->id) == NULL) {
        if (member_count == member_capacity) {
            size_t grown = member_capacity == 0 ? 8 : member_capacity * 2;
            member_t *more = realloc(members, grown * sizeof(member_t));
            // Out of memory: trap; the host delivers by round robin and rebuilds us.
            if (more == NULL) abort();
            members = more;
            member_capacity = grown;
        }
        size_t at = member_count;
        while (at > 0 && members[at - 1].id > m->id) {
            members[at] = members[at - 1];
            at--;
        }
        // Offline until the member-load that follows. We keep the client id's memory...
        members[at] = (member_t){.id = m->id, .client_id = m->client_id};
        member_count++;
        m->client_id = (strategy_string_t){0};
    }
    // ...and free the rest.
    exports_sharq_dispatch_select_member_member_free(m);
}

void exports_sharq_dispatch_select_member_member_left(member_id_t id) {
    member_t *member = find(id);
    if (member == NULL) return;
    strategy_string_free(&member->client_id);
    size_t i = (size_t)(member - members);
    memmove(&members[i], &members[i + 1], (member_count - i - 1) * sizeof(member_t));
    member_count--;
}

void exports_sharq_dispatch_select_member_member_load(member_id_t id, uint32_t inflight,
                                                      uint32_t capacity, bool online) {
    member_t *member = find(id);
    if (member == NULL) return;
    member->online = online;
    member->full = inflight >= capacity;
}

bool exports_sharq_dispatch_select_member_select(
    exports_sharq_dispatch_select_member_msg_meta_t *m, member_id_t *ret) {
    // init asks for user properties, so the host calls select_full instead.
    (void)m;
    (void)ret;
    return false;
}

static bool is_candidate(const member_t *member, bool need_room) {
    return member->online && !(need_room && member->full);
}

// Chooses for a message with the given tenant (NULL: none).
static bool choose(const strategy_string_t *tenant, member_id_t *ret) {
    size_t with_room = 0, online = 0;
    for (size_t i = 0; i < member_count; i++) {
        online += members[i].online;
        with_room += members[i].online && !members[i].full;
    }
    bool need_room = with_room > 0;
    size_t candidates = need_room ? with_room : online;
    if (candidates == 0) return false;

    if (tenant != NULL) {
        bool found = false;
        uint32_t best = 0;
        for (size_t i = 0; i < member_count; i++) {
            if (!is_candidate(&members[i], need_room)) continue;
            uint32_t s = score(tenant, &members[i].client_id);
            if (!found || s > best) { // on a tie the lower id wins
                found = true;
                best = s;
                *ret = members[i].id;
            }
        }
        return true;
    }

    size_t wanted = (size_t)(round_robin++ % candidates);
    for (size_t i = 0, seen = 0; i < member_count; i++) {
        if (!is_candidate(&members[i], need_room)) continue;
        if (seen++ == wanted) {
            *ret = members[i].id;
            return true;
        }
    }
    return false;
}

bool exports_sharq_dispatch_select_member_select_full(
    exports_sharq_dispatch_select_member_message_t *msg,
    exports_sharq_dispatch_select_member_msg_meta_t *m, member_id_t *ret) {
    (void)m;
    const strategy_string_t *tenant = NULL;
    for (size_t i = 0; i < msg->user_properties.len && tenant == NULL; i++) {
        const strategy_string_t *key = &msg->user_properties.ptr[i].f0;
        if (key->len == 6 && memcmp(key->ptr, "tenant", 6) == 0) {
            tenant = &msg->user_properties.ptr[i].f1;
        }
    }
    bool chosen = choose(tenant, ret);
    // Only now: `tenant` points into the message.
    exports_sharq_dispatch_select_member_message_free(msg);
    return chosen;
}
