"""Organizations, memberships, sessions and invitations: shapes, paging, scripting, the spec's rules."""

from __future__ import annotations

import httpx

from clerk_sync.simulator import SimulatedClerk
from tests.simulator.conftest import KEY


async def test_organizations_offset_paging_and_members_count(api: httpx.AsyncClient, sim: SimulatedClerk):
    inst = sim.instance(KEY)
    first = (await api.get("/organizations", params={"limit": 5, "order_by": "+created_at"})).json()
    rest = (
        await api.get("/organizations", params={"limit": 10, "offset": 5, "order_by": "+created_at"})
    ).json()
    assert first["total_count"] == rest["total_count"] == 12
    assert [o["id"] for o in first["data"] + rest["data"]] == inst.org_ids()
    assert "members_count" not in first["data"][0]
    counted = (await api.get("/organizations", params={"include_members_count": "true", "limit": 100})).json()
    by_org = {o["id"]: o["members_count"] for o in counted["data"]}
    memberships = (await api.get("/organization_memberships", params={"limit": 500})).json()
    for org_id, n in by_org.items():
        assert n == sum(1 for m in memberships["data"] if m["organization"]["id"] == org_id)
    default = (await api.get("/organizations")).json()["data"]
    assert [o["id"] for o in default] == list(reversed(inst.org_ids()))[:10]


async def test_organization_by_id_or_slug_and_404(api: httpx.AsyncClient, sim: SimulatedClerk):
    inst = sim.instance(KEY)
    org_id = inst.org_ids()[0]
    org = (await api.get(f"/organizations/{org_id}")).json()
    assert org["id"] == org_id
    assert (await api.get(f"/organizations/{org['slug']}")).json()["id"] == org_id
    inst.delete_org(org_id)
    assert (await api.get(f"/organizations/{org_id}")).status_code == 404
    assert (await api.get(f"/organizations/{org_id}/memberships")).status_code == 404


async def test_memberships_instance_wide_and_per_org(api: httpx.AsyncClient, sim: SimulatedClerk):
    inst = sim.instance(KEY)
    all_mems = (
        await api.get("/organization_memberships", params={"limit": 500, "order_by": "+created_at"})
    ).json()
    assert [m["id"] for m in all_mems["data"]] == inst.membership_ids()
    assert all_mems["total_count"] == len(inst.membership_ids())
    org_id = all_mems["data"][0]["organization"]["id"]
    per_org = (await api.get(f"/organizations/{org_id}/memberships", params={"limit": 1})).json()
    expected = [m for m in all_mems["data"] if m["organization"]["id"] == org_id]
    assert per_org["total_count"] == len(expected) and len(per_org["data"]) == 1
    member = expected[0]["public_user_data"]["user_id"]
    by_user = (await api.get("/organization_memberships", params={"user_id": member, "limit": 500})).json()
    assert by_user["data"] and all(m["public_user_data"]["user_id"] == member for m in by_user["data"])


async def test_membership_scripting_and_cascades(api: httpx.AsyncClient, sim: SimulatedClerk):
    inst = sim.instance(KEY)
    org = inst.create_org(name="New Org")
    assert org["slug"] == "new-org"
    uid = inst.user_ids()[1]
    mem = inst.add_membership(org["id"], uid, role="org:admin")
    assert mem["organization"]["id"] == org["id"] and mem["public_user_data"]["user_id"] == uid
    assert mem["permissions"] and mem["role_name"] == "Admin"
    updated = inst.update_membership(mem["id"], role="org:member")
    assert updated["role"] == "org:member" and updated["updated_at"] >= mem["updated_at"]
    listed = (await api.get(f"/organizations/{org['id']}/memberships")).json()
    assert [m["id"] for m in listed["data"]] == [mem["id"]]
    inst.update_user(uid, first_name="Changed")
    listed = (await api.get(f"/organizations/{org['id']}/memberships")).json()
    assert listed["data"][0]["public_user_data"]["first_name"] == "Changed"
    inst.delete_user(uid)
    assert (await api.get(f"/organizations/{org['id']}/memberships")).json() == {"data": [], "total_count": 0}
    other = inst.add_membership(org["id"], inst.user_ids()[2])
    inst.remove_membership(other["id"])
    assert other["id"] not in inst.membership_ids()


async def test_sessions_need_user_or_client(api: httpx.AsyncClient):
    r = await api.get("/sessions")
    assert r.status_code == 422 and r.json()["errors"][0]["code"] == "form_param_missing"


async def test_sessions_per_user_status_filter_and_scripting(api: httpx.AsyncClient, sim: SimulatedClerk):
    inst = sim.instance(KEY)
    uid = next(u for u in inst.user_ids() if (inst.get_user(u) or {}).get("last_sign_in_at"))
    before_user = inst.get_user(uid)
    sessions = (await api.get("/sessions", params={"user_id": uid})).json()
    assert sessions and all(s["user_id"] == uid for s in sessions)
    assert [s["created_at"] for s in sessions] == sorted((s["created_at"] for s in sessions), reverse=True)

    sim.clock_ms = 1_800_000_000_123
    new = inst.sign_in(uid)
    assert new["status"] == "active" and new["created_at"] == 1_800_000_000_123
    user = inst.get_user(uid)
    assert user is not None and before_user is not None
    assert user["last_sign_in_at"] == 1_800_000_000_123 and user["updated_at"] == 1_800_000_000_123
    assert user["last_active_at"] == 1_800_000_000_123 - 1_800_000_000_123 % 86_400_000
    active = (await api.get("/sessions", params={"user_id": uid, "status": "active"})).json()
    assert new["id"] in [s["id"] for s in active]

    sim.clock_ms += 5_000
    ended = inst.set_session_status(new["id"], "revoked")
    assert ended["status"] == "revoked" and ended["updated_at"] == sim.clock_ms
    assert inst.get_user(uid) == user  # ending a session changes nothing on the user
    revoked = (await api.get("/sessions", params={"user_id": uid, "status": "revoked"})).json()
    assert new["id"] in [s["id"] for s in revoked]
    by_client = (await api.get("/sessions", params={"client_id": new["client_id"]})).json()
    assert [s["id"] for s in by_client] == [new["id"]]

    inst.purge_session(new["id"])
    after = (await api.get("/sessions", params={"user_id": uid})).json()
    assert new["id"] not in [s["id"] for s in after] and len(after) == len(sessions)
    assert (await api.get("/sessions", params={"user_id": uid, "status": "bogus"})).status_code == 422
    inst.delete_user(uid)
    assert (await api.get("/sessions", params={"user_id": uid})).json() == []


async def test_sessions_paging(api: httpx.AsyncClient, sim: SimulatedClerk):
    inst = sim.instance(KEY)
    uid = inst.user_ids()[0]
    for _ in range(4):
        inst.sign_in(uid)
    everything = (await api.get("/sessions", params={"user_id": uid})).json()
    page = (await api.get("/sessions", params={"user_id": uid, "limit": 2, "offset": 1})).json()
    assert page == everything[1:3]


async def test_invitations_hide_revoked_unless_asked(api: httpx.AsyncClient, sim: SimulatedClerk):
    inst = sim.instance(KEY)
    inv = inst.create_invitation("guest@example.com")
    default = (await api.get("/invitations", params={"limit": 500})).json()
    assert isinstance(default, list) and inv["id"] == default[0]["id"]
    assert all(i["status"] != "revoked" for i in default)
    inst.set_invitation_status(inv["id"], "revoked")
    default = (await api.get("/invitations", params={"limit": 500})).json()
    assert inv["id"] not in [i["id"] for i in default]
    revoked = (await api.get("/invitations", params={"status": "revoked", "limit": 500})).json()
    assert inv["id"] in [i["id"] for i in revoked] and all(i["revoked"] for i in revoked)
    pending = (await api.get("/invitations", params={"status": "pending", "limit": 500})).json()
    assert pending and all(i["status"] == "pending" for i in pending)
    page = (await api.get("/invitations", params={"limit": 2, "offset": 1})).json()
    assert page == default[1:3]
    assert (await api.get("/invitations", params={"status": "lost"})).status_code == 422


async def test_instance_endpoint(api: httpx.AsyncClient, sim: SimulatedClerk):
    body = (await api.get("/instance")).json()
    assert body["object"] == "instance" and body["environment_type"] == "production"
    assert body["id"] == sim.instance(KEY).instance_id and body["id"].startswith("ins_")
