"""{{name}}: a sharq dispatch strategy in Python (contract sharq:dispatch@0.2.0, world `strategy`).

- A message whose PUBLISH has the user property `tenant` goes to the candidate with the highest
  score(tenant, member client id): rendezvous hashing. One tenant's messages stick to one
  member, and a member joining or leaving moves only the tenants it wins or loses.
- A message without `tenant` goes round robin over the candidates.
- Candidates: the online members with room in their window; when none has room, every online
  member. With none online we decline and the broker's own round robin decides.

componentize-py generates the `wit_world` bindings from wit/ at build time (see build.sh).
"""

from typing import List, Optional, Tuple

from wit_world import exports
from wit_world.exports import select_member

MASK = 0xFFFFFFFF


class Member:
    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        # Offline until the member-load that follows member-joined.
        self.online = False
        self.full = False


# One instance serves one group and is never called concurrently: module state is its state.
members: dict = {}  # member id -> Member
round_robin = 0  # how many untagged messages we have placed


def fnv1a(data: bytes) -> int:
    """32-bit FNV-1a."""
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & MASK
    return h


def score(tenant: str, client_id: str) -> int:
    """The rendezvous score of a member for a tenant."""
    # A 0 byte between the two, so that ("ab", "c") and ("a", "bc") score differently.
    h = fnv1a(tenant.encode() + b"\0" + client_id.encode())
    # murmur3's finaliser: FNV-1a mixes the last bytes poorly, and client ids often differ only
    # there (worker-1, worker-2).
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & MASK
    h ^= h >> 16
    return h


def candidates() -> List[int]:
    """Online members with room, in id order; every online member when none has room."""
    online = [id for id in sorted(members) if members[id].online]
    return [id for id in online if not members[id].full] or online


class SelectMember(exports.SelectMember):
    def init(self, group: str, params: List[Tuple[str, str]]) -> select_member.Needs:
        # We accept any params; `raise componentize_py_types.Err("why")` refuses a configuration.
        global members, round_robin
        # The host may rebuild an instance at any time: start from nothing.
        members = {}
        round_robin = 0
        # Only the user properties: the host then copies no topic or payload into us.
        return select_member.Needs.USER_PROPERTIES

    def member_joined(self, m: select_member.Member) -> None:
        members.setdefault(m.id, Member(m.client_id))

    def member_left(self, id: int) -> None:
        members.pop(id, None)

    def member_load(self, id: int, inflight: int, capacity: int, online: bool) -> None:
        member = members.get(id)
        if member is not None:
            member.online = online
            member.full = inflight >= capacity

    def select(self, m: select_member.MsgMeta) -> Optional[int]:
        # init asks for user properties, so the host calls select_full instead.
        return None

    def select_full(self, msg: select_member.Message, m: select_member.MsgMeta) -> Optional[int]:
        global round_robin
        ids = candidates()
        if not ids:
            return None
        tenant = next((value for key, value in msg.user_properties if key == "tenant"), None)
        if tenant is not None:
            # max() keeps the first of equal scores: on a tie the lower id wins.
            return max(ids, key=lambda id: score(tenant, members[id].client_id))
        chosen = ids[round_robin % len(ids)]
        round_robin += 1
        return chosen
