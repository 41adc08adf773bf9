"""The roster (member id -> slot) shared by every scheme, against a dict model.

It is an open-addressing table with back-shift deletion, so the property that matters is
that no sequence of joins and leaves (including ids whose hashes collide in the table) ever
loses or confuses a member, and that slots are reused leftmost first.
"""

from __future__ import annotations

import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rmsec_plugins.keymgmt_flat.common import Roster

IDS = st.binary(min_size=1, max_size=3)  # a small id space: many collisions and re-joins


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.lists(IDS, max_size=6), st.lists(st.integers(0, 50), max_size=4)), max_size=25))
def test_roster_matches_a_dict(batches: list[tuple[list[bytes], list[int]]]) -> None:
    roster = Roster()
    model: dict[bytes, int] = {}
    for joins, picks in batches:
        current = sorted(model)
        leaves = sorted({current[p % len(current)] for p in picks}) if current else []
        joins = [m for m in dict.fromkeys(joins) if m not in model or m in leaves]
        vacated = roster.remove(leaves)
        assert vacated == [model.pop(m) for m in leaves]
        free_before = set(range(roster.end)) - set(model.values())
        slots = roster.place(joins, vacated)
        # joins reuse this batch's slots, then the lowest free ones, then fresh ones
        expected = sorted(vacated)[: len(joins)]
        others = sorted(free_before - set(expected))
        expected += others[: len(joins) - len(expected)]
        fresh = len(joins) - len(expected)
        assert slots[: len(expected)] == expected and len(slots) == len(joins)
        assert slots[len(expected) :] == list(range(roster.end - fresh, roster.end))
        model.update(zip(joins, slots, strict=True))
        assert len(roster) == len(model)
        for member_id, slot in model.items():
            assert member_id in roster and roster.slot_of(member_id) == slot
    for absent in (b"\xff" * 4, b"", "text", 5):
        assert absent not in roster
    with pytest.raises(KeyError):
        roster.slot_of(b"\xff" * 4)


def test_roster_is_compact() -> None:
    roster = Roster()
    ids = [b"member-%07d" % i for i in range(200_000)]
    roster.place(ids, [])
    per_member = roster.state_bytes() / len(roster)
    assert per_member < 30, per_member
    assert sys.getsizeof({m: i for i, m in enumerate(ids)}) / len(ids) > per_member
    roster.remove(ids[::2])
    assert all(roster.slot_of(m) == 2 * i + 1 for i, m in enumerate(ids[1::2][:1000]))
