"""level_hash in Python: hash on a chosen topic level, skip members whose window is full.

The algorithm is specified in ../README.md; the Rust, C and JavaScript versions next to this one
implement it identically. componentize-py generates the `wit_world` bindings at build time.
"""

from typing import List, Optional, Tuple

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import select_member

FNV_OFFSET = 0x811C9DC5
FNV_PRIME = 0x01000193

# One instance serves one group and is never re-entered: module-level state is the instance's.
level = 0
# id -> [online, full]
members = {}


def fnv1a32(data: bytes) -> int:
    h = FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * FNV_PRIME) & 0xFFFFFFFF
    return h


def key(topic: str) -> str:
    parts = topic.split("/")
    return parts[level] if level < len(parts) else topic


class SelectMember(exports.SelectMember):
    def init(self, group: str, params: List[Tuple[str, str]]) -> select_member.Needs:
        global level, members
        chosen = 0
        for name, value in params:
            if name != "level":
                raise Err(f"unknown param `{name}` (accepted: `level`)")
            if not value.isdigit():
                raise Err(f"param `level` must be a non-negative integer, got `{value}`")
            chosen = int(value)
        level = chosen
        members = {}
        return select_member.Needs.TOPIC

    def member_joined(self, m: select_member.Member) -> None:
        members[m.id] = [False, False]

    def member_left(self, id: int) -> None:
        members.pop(id, None)

    def member_load(self, id: int, inflight: int, capacity: int, online: bool) -> None:
        state = members.get(id)
        if state is not None:
            state[0] = online
            state[1] = inflight >= capacity

    def select(self, m: select_member.MsgMeta) -> Optional[int]:
        # init asks for the topic, so the host only ever calls select_full.
        return None

    def select_full(
        self, topic: str, publisher: str, payload: Optional[bytes], m: select_member.MsgMeta
    ) -> Optional[int]:
        candidates = sorted(id for id, (online, _) in members.items() if online)
        n = len(candidates)
        if n == 0:
            return None
        start = fnv1a32(key(topic).encode()) % n
        for i in range(n):
            candidate = candidates[(start + i) % n]
            if not members[candidate][1]:
                return candidate
        return None
