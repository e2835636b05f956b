"""Data is a pure function of (seed, environment, name): the same seed serves the same bytes."""

from __future__ import annotations

from clerk_sync.simulator import SimulatedClerk
from clerk_sync.simulator.ids import IdCodec
from clerk_sync.simulator.state import UserQuery


def snapshot(sim: SimulatedClerk, key: str = "sk_live_acme") -> tuple:
    inst = sim.instance(key)
    users = inst.list_users(UserQuery(), limit=500, offset=0, starting_after=None)
    sessions = [inst.list_sessions(u["id"], None, None) for u in users[:20]]
    return (
        inst.instance_id,
        users,
        sessions,
        inst.list_orgs(False, True),
        inst.list_memberships(None, None, False, 0, 500),
        inst.list_invitations(None),
    )


def test_same_seed_same_data():
    assert snapshot(SimulatedClerk(seed=5, users=700, orgs=9)) == snapshot(
        SimulatedClerk(seed=5, users=700, orgs=9)
    )


def test_other_seed_or_instance_other_data():
    base = snapshot(SimulatedClerk(seed=5, users=700, orgs=9))
    other_seed = snapshot(SimulatedClerk(seed=6, users=700, orgs=9))
    other_name = snapshot(SimulatedClerk(seed=5, users=700, orgs=9), "sk_live_beta")
    for other in (other_seed, other_name):
        assert other[0] != base[0]
        assert [u["id"] for u in other[1]] != [u["id"] for u in base[1]]
        assert [u["email_addresses"] for u in other[1]] != [u["email_addresses"] for u in base[1]]


def test_ids_round_trip_and_reject_strangers():
    codec = IdCodec("user_", 42)
    for index, sub in ((0, 0), (1, 0), (999_999, 3), (2**30 - 1, 65535)):
        ident = codec.encode(index, sub)
        assert len(ident) == 32 and ident.startswith("user_2")
        assert codec.decode(ident) == (index, sub)
    ident = codec.encode(77)
    assert IdCodec("user_", 43).decode(ident) is None
    assert codec.decode(ident[:-1] + ("a" if ident[-1] != "a" else "b")) is None
    assert codec.decode("user_2") is None and codec.decode(ident + "x") is None
    ids = [codec.encode(i) for i in range(0, 2_000_000, 9_973)]
    assert ids == sorted(ids)


def test_a_million_users_cost_nothing_until_read():
    sim = SimulatedClerk(seed=1, users=1_000_000, orgs=2000)
    inst = sim.instance("sk_live_big")
    assert inst.user_count() == 1_000_000
    ids_tail = inst.list_users(UserQuery(descending=True), limit=3, offset=0, starting_after=None)
    assert [u["id"] for u in ids_tail] == [inst.ids.user.encode(i) for i in (999_999, 999_998, 999_997)]
    page = inst.list_users(UserQuery(descending=False), limit=500, offset=0, starting_after=ids_tail[0]["id"])
    assert page == []
    middle = inst.list_users(
        UserQuery(descending=False), limit=2, offset=0, starting_after=inst.ids.user.encode(500_000)
    )
    assert [u["id"] for u in middle] == [inst.ids.user.encode(i) for i in (500_001, 500_002)]
    after = UserQuery(created_at_after=middle[0]["created_at"])
    assert inst.count_users(after) == 1_000_000 - 500_002
    assert len(inst.membership_ids()) > 4000
