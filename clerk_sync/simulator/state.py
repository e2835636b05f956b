"""One simulated Clerk instance: its data, the scripting API tests use, and the list queries.

Users are never materialised: user ``i`` is ``UserFactory.user(i)`` overlaid with whatever a test
changed (``_overrides``), unless ``i`` is in ``_deleted``. Created users simply take the next index,
so every user is an index, ids decode to indexes, and ``created_at`` increases with the index:
a ``starting_after`` page is a short forward scan and a created_at count is two binary searches.
Organizations, memberships and invitations are small and kept as dicts.

Every public method takes the simulator's lock: the server thread reads while a test mutates.
"""

from __future__ import annotations

import bisect
import heapq
import random
import threading
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from clerk_sync.simulator import data
from clerk_sync.simulator.data import Codecs, UserFactory, day_floor
from clerk_sync.simulator.ids import b62, mix64, stable_hash

USER_ORDER_FIELDS = ("created_at", "updated_at", "last_active_at", "last_sign_in_at")
SESSION_STATUSES = ("active", "revoked", "ended", "expired", "removed", "abandoned", "replaced", "pending")
INVITATION_STATUSES = ("pending", "accepted", "revoked", "expired")
_NULL = -(1 << 62)


class ApiError(Exception):
    """An error response in Clerk's shape (raised by queries, rendered by the app)."""

    def __init__(self, status: int, code: str, message: str, long_message: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.long_message = long_message or message


def unprocessable(long_message: str, code: str = "form_param_value_invalid") -> ApiError:
    """A 422 the way Clerk words bad parameters."""
    return ApiError(422, code, "is invalid", long_message)


@dataclass
class UserQuery:
    """The parsed filters and ordering of ``GET /users`` and ``/users/count``."""

    order_field: str = "created_at"
    descending: bool = True
    created_at_after: int | None = None
    created_at_before: int | None = None
    last_active_at_after: int | None = None
    last_active_at_before: int | None = None
    last_active_at_since: int | None = None
    last_sign_in_at_after: int | None = None
    last_sign_in_at_before: int | None = None
    include_ids: list[str] | None = None
    exclude_ids: set[str] = field(default_factory=set)

    @property
    def has_value_filters(self) -> bool:
        """Filters that need each user's values (not just its index)."""
        return any(
            v is not None
            for v in (
                self.last_active_at_after,
                self.last_active_at_before,
                self.last_active_at_since,
                self.last_sign_in_at_after,
                self.last_sign_in_at_before,
            )
        ) or bool(self.exclude_ids)


class InstanceState:
    """Data and scripting of one simulated instance (production or development)."""

    def __init__(
        self,
        *,
        key: str,
        environment: str,
        name: str,
        seed: int,
        users: int,
        orgs: int,
        lock: threading.RLock,
        now_ms: Callable[[], int],
    ) -> None:
        self.key = key
        self.environment = environment
        self.name = name
        self._lock = lock
        self._now_ms = now_ms
        self._ikey = mix64(seed, stable_hash(f"{environment}:{name}"))
        self.instance_id = "ins_2" + b62((mix64(self._ikey, 1) << 64) | mix64(self._ikey, 2), 26)
        self.ids = Codecs(self._ikey)
        self.revoked = False
        self._factory = UserFactory(self._ikey, users, self.ids)
        self._n_base = users
        self._next = users
        self._overrides: dict[int, dict[str, Any]] = {}
        self._deleted: set[int] = set()
        self._deleted_sorted: list[int] = []
        self._base_cache: dict[str, tuple[array, array, array]] = {}
        self._sorted_cache: dict[str, array] = {}
        self._sessions_extra: dict[int, list[dict[str, Any]]] = {}
        self._session_over: dict[str, dict[str, Any]] = {}
        self._purged: set[str] = set()
        self._orgs: dict[str, dict[str, Any]] = {}
        self._org_next = 0
        self._memberships: dict[str, dict[str, Any]] = {}
        self._mem_next = 0
        self._invitations: dict[str, dict[str, Any]] = {}
        self._inv_next = 0
        self._generate_orgs(orgs)
        self._generate_invitations()

    # ------------------------------------------------------------------ generation

    def _generate_orgs(self, count: int) -> None:
        f = self._factory
        for k in range(count):
            r = mix64(self._ikey, k, 50)
            members: list[int] = []
            if self._n_base:
                for j in range(1 + r % 5):
                    idx = mix64(self._ikey, k, j, 51) % self._n_base
                    if idx not in members:
                        members.append(idx)
            creator = self.ids.user.encode(members[0]) if members else None
            org = data.organization(self.ids, self._ikey, k, creator)
            if members:
                org["created_at"] = max(org["created_at"], f.created_at(members[0]) + 60_000)
                org["updated_at"] = max(org["updated_at"], org["created_at"])
            self._orgs[org["id"]] = org
            self._org_next = k + 1
            for j, idx in enumerate(members):
                joined = org["created_at"] if j == 0 else max(org["created_at"], f.created_at(idx))
                joined += 0 if j == 0 else mix64(self._ikey, k, j, 52) % (30 * data.DAY_MS)
                self._add_membership_core(
                    org["id"], self.ids.user.encode(idx), "org:admin" if j == 0 else "org:member", joined
                )

    def _generate_invitations(self) -> None:
        count = min(500, max(5, self._n_base // 50))
        weights = (("pending", 50), ("accepted", 25), ("revoked", 15), ("expired", 10))
        for k in range(count):
            rnd = random.Random(mix64(self._ikey, k, 60))
            status = rnd.choices([s for s, _ in weights], [w for _, w in weights])[0]
            created = data.T0_MS + rnd.randrange(data.SPAN_MS)
            email = f"invitee{k}@{rnd.choice(data.DOMAINS)}"
            inv = data.invitation(self.ids, self._ikey, k, status, created, email)
            if status != "pending":
                inv["updated_at"] = created + rnd.randrange(1, 10 * data.DAY_MS)
            self._invitations[inv["id"]] = inv
        self._inv_next = count

    # ------------------------------------------------------------------ users: primitives

    def now(self) -> int:
        """The simulator's "now" in ms."""
        return self._now_ms()

    def _index(self, user_id: str) -> int | None:
        decoded = self.ids.user.decode(user_id)
        if decoded is None or decoded[1] != 0:
            return None
        return decoded[0]

    def _live(self, index: int) -> bool:
        return 0 <= index < self._next and index not in self._deleted

    def _live_index(self, user_id: str) -> int:
        index = self._index(user_id)
        if index is None or not self._live(index):
            raise KeyError(user_id)
        return index

    def _val(self, index: int, name: str) -> Any:
        over = self._overrides.get(index)
        if over is not None and name in over:
            return over[name]
        if index >= self._n_base:
            return None
        cache = self._base_cache.get(name)
        if cache is not None:
            v = cache[2][index]
            return None if v == _NULL else v
        return getattr(self._factory, name)(index)

    def _created_at(self, index: int) -> int:
        if index < self._n_base:
            return self._factory.created_at(index)
        return int(self._overrides[index]["created_at"])

    def _user(self, index: int) -> dict[str, Any]:
        over = self._overrides.get(index)
        if index >= self._n_base:
            assert over is not None
            return dict(over)
        user = self._factory.user(index)
        if over:
            user.update(over)
        return user

    def _apply_convenience(self, user: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
        """Turn ``email_address="x"`` into an edit of the primary email address."""
        fields = dict(fields)
        address = fields.pop("email_address", None)
        if address is not None:
            emails = [dict(e) for e in user["email_addresses"]]
            emails[0]["email_address"] = address
            emails[0]["updated_at"] = fields.get("updated_at", self.now())
            fields["email_addresses"] = emails
        return fields

    # ------------------------------------------------------------------ users: scripting

    def create_user(self, **overrides: Any) -> dict[str, Any]:
        """A new user created "now" (after every existing one); overrides any field."""
        with self._lock:
            index = self._next
            last = self._created_at(index - 1) if index else 0
            now = max(self.now(), last + 1)
            created = int(overrides.pop("created_at", now))
            if created <= last:
                raise ValueError("created_at must be later than every existing user's")
            base = self._factory.user(index)
            for item in (*base["email_addresses"], *base["phone_numbers"]):
                item["created_at"] = item["updated_at"] = created
                item["verification"]["expire_at"] = created + 600_000
            base.update(
                created_at=created,
                updated_at=created,
                last_sign_in_at=None,
                last_active_at=None,
                mfa_enabled_at=created if base["two_factor_enabled"] else None,
                password_last_updated_at=created if base["password_enabled"] else None,
                legal_accepted_at=None,
            )
            base.update(self._apply_convenience(base, overrides))
            self._overrides[index] = base
            self._next = index + 1
            return dict(base)

    def update_user(self, user_id: str, **fields: Any) -> dict[str, Any]:
        """Change fields of a live user; ``updated_at`` becomes now unless given."""
        with self._lock:
            index = self._live_index(user_id)
            user = self._user(index)
            if "created_at" in fields and fields["created_at"] != user["created_at"]:
                raise ValueError("created_at cannot change")
            fields.setdefault("updated_at", max(self.now(), user["updated_at"]))
            fields = self._apply_convenience(user, fields)
            self._overrides.setdefault(index, {}).update(fields)
            return self._user(index)

    def delete_user(self, user_id: str) -> dict[str, Any]:
        """Delete a user with its memberships and sessions; returns Clerk's DeletedObject."""
        with self._lock:
            index = self._live_index(user_id)
            self._deleted.add(index)
            bisect.insort(self._deleted_sorted, index)
            for mem_id in [m["id"] for m in self._memberships.values() if m["user_id"] == user_id]:
                del self._memberships[mem_id]
            return {"object": "user", "id": user_id, "deleted": True}

    def get_user(self, user_id: str) -> dict[str, Any] | None:
        """The live user, or None."""
        with self._lock:
            index = self._index(user_id)
            if index is None or not self._live(index):
                return None
            return self._user(index)

    def user_ids(self) -> list[str]:
        """Live user ids, created_at ascending."""
        with self._lock:
            encode = self.ids.user.encode
            return [encode(i) for i in range(self._next) if i not in self._deleted]

    def user_count(self) -> int:
        """Live users."""
        with self._lock:
            return self._next - len(self._deleted)

    # ------------------------------------------------------------------ sessions

    def _base_sessions(self, index: int) -> list[dict[str, Any]]:
        return self._factory.sessions(index) if index < self._n_base else []

    def _sessions_of(self, index: int) -> list[dict[str, Any]]:
        out = []
        for s in (*self._base_sessions(index), *self._sessions_extra.get(index, ())):
            if s["id"] in self._purged:
                continue
            over = self._session_over.get(s["id"])
            out.append({**s, **over} if over else s)
        out.sort(key=lambda s: (s["created_at"], s["id"]), reverse=True)
        return out

    def _find_session(self, session_id: str) -> tuple[int, dict[str, Any]]:
        decoded = self.ids.session.decode(session_id)
        if decoded is None or not self._live(decoded[0]):
            raise KeyError(session_id)
        for s in self._sessions_of(decoded[0]):
            if s["id"] == session_id:
                return decoded[0], s
        raise KeyError(session_id)

    def sign_in(self, user_id: str) -> dict[str, Any]:
        """A new active session; the user's last_sign_in_at / last_active_at / updated_at move to now."""
        with self._lock:
            index = self._live_index(user_id)
            now = self.now()
            extra = self._sessions_extra.setdefault(index, [])
            number = self._factory.session_count(index) if index < self._n_base else 0
            number += len(extra)
            rnd = random.Random(mix64(self._ikey, index, number, 40))
            sess = data.session(
                self.ids, index, number, user_id=user_id, status="active", created_at=now,
                last_active_at=now, rnd=rnd,
            )  # fmt: skip
            extra.append(sess)
            self._overrides.setdefault(index, {}).update(
                last_sign_in_at=now, last_active_at=day_floor(now), updated_at=now
            )
            return dict(sess)

    def set_session_status(self, session_id: str, status: str) -> dict[str, Any]:
        """Change a session's status (the user is not touched, as in Clerk)."""
        if status not in SESSION_STATUSES:
            raise ValueError(f"unknown session status {status!r}")
        with self._lock:
            self._find_session(session_id)
            self._session_over.setdefault(session_id, {}).update(status=status, updated_at=self.now())
            return self._find_session(session_id)[1]

    def purge_session(self, session_id: str) -> None:
        """Make a session vanish from ``/sessions`` (Clerk's cleanup of old sessions)."""
        with self._lock:
            self._find_session(session_id)
            self._purged.add(session_id)

    def list_sessions(
        self, user_id: str | None, client_id: str | None, status: str | None
    ) -> list[dict[str, Any]]:
        """Sessions of a user or a client, newest first."""
        with self._lock:
            if user_id is not None:
                index = self._index(user_id)
            else:
                assert client_id is not None
                decoded = self.ids.client.decode(client_id)
                index = decoded[0] if decoded else None
            if index is None or not self._live(index):
                return []
            out = self._sessions_of(index)
            if client_id is not None:
                out = [s for s in out if s["client_id"] == client_id]
            if status is not None:
                out = [s for s in out if s["status"] == status]
            return out

    # ------------------------------------------------------------------ organizations

    def create_org(self, **fields: Any) -> dict[str, Any]:
        """A new organization created now."""
        with self._lock:
            k = self._org_next
            self._org_next += 1
            org = data.organization(self.ids, self._ikey, k, fields.pop("created_by", None))
            now = self.now()
            org.update(created_at=now, updated_at=now)
            if "name" in fields and "slug" not in fields:
                fields["slug"] = str(fields["name"]).lower().replace(" ", "-")
            org.update(fields)
            self._orgs[org["id"]] = org
            return self.render_org(org)

    def update_org(self, org_id: str, **fields: Any) -> dict[str, Any]:
        """Change fields of an organization; ``updated_at`` becomes now unless given."""
        with self._lock:
            org = self._orgs[org_id]
            fields.setdefault("updated_at", max(self.now(), org["updated_at"]))
            org.update(fields)
            return self.render_org(org)

    def delete_org(self, org_id: str) -> dict[str, Any]:
        """Delete an organization and its memberships; returns Clerk's DeletedObject."""
        with self._lock:
            org = self._orgs.pop(org_id)
            for mem_id in [m["id"] for m in self._memberships.values() if m["organization_id"] == org_id]:
                del self._memberships[mem_id]
            return {"object": "organization", "id": org_id, "slug": org["slug"], "deleted": True}

    def org_ids(self) -> list[str]:
        """Organization ids, created_at ascending."""
        with self._lock:
            return [o["id"] for o in sorted(self._orgs.values(), key=lambda o: (o["created_at"], o["id"]))]

    def get_org(self, id_or_slug: str, members_count: bool = False) -> dict[str, Any] | None:
        """An organization by id or slug, or None."""
        with self._lock:
            org = self._orgs.get(id_or_slug)
            if org is None:
                org = next((o for o in self._orgs.values() if o["slug"] == id_or_slug), None)
            return None if org is None else self.render_org(org, members_count)

    def render_org(self, org: dict[str, Any], members_count: bool = False) -> dict[str, Any]:
        """The organization as served (``members_count`` only when asked)."""
        out = dict(org)
        if members_count:
            out["members_count"] = sum(
                1 for m in self._memberships.values() if m["organization_id"] == org["id"]
            )
        return out

    def list_orgs(self, descending: bool, members_count: bool) -> list[dict[str, Any]]:
        """All organizations ordered by created_at."""
        with self._lock:
            orgs = sorted(self._orgs.values(), key=lambda o: (o["created_at"], o["id"]), reverse=descending)
            if not members_count:
                return [dict(o) for o in orgs]
            counts: dict[str, int] = {}
            for m in self._memberships.values():
                counts[m["organization_id"]] = counts.get(m["organization_id"], 0) + 1
            return [{**o, "members_count": counts.get(o["id"], 0)} for o in orgs]

    # ------------------------------------------------------------------ memberships

    def _add_membership_core(self, org_id: str, user_id: str, role: str, created_at: int) -> dict[str, Any]:
        core = data.membership_core(self.ids, self._mem_next, org_id, user_id, role, created_at)
        self._mem_next += 1
        self._memberships[core["id"]] = core
        return core

    def add_membership(self, org_id: str, user_id: str, role: str = "org:member") -> dict[str, Any]:
        """Add a live user to an organization now."""
        with self._lock:
            if org_id not in self._orgs:
                raise KeyError(org_id)
            self._live_index(user_id)
            if any(
                m["organization_id"] == org_id and m["user_id"] == user_id for m in self._memberships.values()
            ):
                raise ValueError("already a member")
            return self.render_membership(self._add_membership_core(org_id, user_id, role, self.now()))

    def update_membership(self, membership_id: str, **fields: Any) -> dict[str, Any]:
        """Change a membership (e.g. ``role``); ``updated_at`` becomes now unless given."""
        with self._lock:
            core = self._memberships[membership_id]
            if "role" in fields:
                admin = fields["role"] == "org:admin"
                fields.setdefault("role_name", "Admin" if admin else "Member")
                fields.setdefault(
                    "permissions", list(data.ADMIN_PERMISSIONS if admin else data.MEMBER_PERMISSIONS)
                )
            fields.setdefault("updated_at", max(self.now(), core["updated_at"]))
            core.update(fields)
            return self.render_membership(core)

    def remove_membership(self, membership_id: str) -> dict[str, Any]:
        """Remove a membership; returns Clerk's DeletedObject."""
        with self._lock:
            del self._memberships[membership_id]
            return {"object": "organization_membership", "id": membership_id, "deleted": True}

    def membership_ids(self) -> list[str]:
        """Membership ids, created_at ascending."""
        with self._lock:
            mems = sorted(self._memberships.values(), key=lambda m: (m["created_at"], m["id"]))
            return [m["id"] for m in mems]

    def render_membership(self, core: dict[str, Any]) -> dict[str, Any]:
        """A membership as served: the current organization and the user's public data embedded."""
        out = {k: v for k, v in core.items() if k not in ("organization_id", "user_id")}
        out["organization"] = dict(self._orgs[core["organization_id"]])
        index = self._index(core["user_id"])
        user = self._user(index) if index is not None and self._live(index) else None
        primary = None
        if user:
            primary = next(
                (
                    e["email_address"]
                    for e in user["email_addresses"]
                    if e["id"] == user["primary_email_address_id"]
                ),
                None,
            )
        out["public_user_data"] = {
            "user_id": core["user_id"],
            "first_name": user["first_name"] if user else None,
            "last_name": user["last_name"] if user else None,
            "profile_image_url": user["profile_image_url"] if user else None,
            "image_url": user["image_url"] if user else "",
            "has_image": user["has_image"] if user else False,
            "identifier": primary,
            "username": user["username"] if user else None,
            "banned": user["banned"] if user else False,
        }
        return out

    def list_memberships(
        self, org_id: str | None, user_ids: list[str] | None, descending: bool, offset: int, limit: int
    ) -> tuple[int, list[dict[str, Any]]]:
        """(total, one page) of memberships of one organization or instance-wide, by created_at."""
        with self._lock:
            mems: Iterable[dict[str, Any]] = self._memberships.values()
            if org_id is not None:
                mems = [m for m in mems if m["organization_id"] == org_id]
            if user_ids:
                wanted = set(user_ids)
                mems = [m for m in mems if m["user_id"] in wanted]
            ordered = sorted(mems, key=lambda m: (m["created_at"], m["id"]), reverse=descending)
            return len(ordered), [self.render_membership(m) for m in ordered[offset : offset + limit]]

    def org_exists(self, org_id: str) -> bool:
        """Whether an organization id is live."""
        with self._lock:
            return org_id in self._orgs

    # ------------------------------------------------------------------ invitations

    def create_invitation(self, email: str, **fields: Any) -> dict[str, Any]:
        """A new pending invitation created now."""
        with self._lock:
            k = self._inv_next
            self._inv_next += 1
            inv = data.invitation(self.ids, self._ikey, k, "pending", self.now(), email)
            inv.update(fields)
            self._invitations[inv["id"]] = inv
            return dict(inv)

    def set_invitation_status(self, invitation_id: str, status: str) -> dict[str, Any]:
        """Accept, revoke or expire an invitation."""
        if status not in INVITATION_STATUSES:
            raise ValueError(f"unknown invitation status {status!r}")
        with self._lock:
            inv = self._invitations[invitation_id]
            inv.update(
                status=status, revoked=status == "revoked", updated_at=max(self.now(), inv["updated_at"])
            )
            return dict(inv)

    def list_invitations(self, status: str | None, descending: bool = True) -> list[dict[str, Any]]:
        """Invitations newest first; revoked ones only when ``status=revoked`` is asked."""
        with self._lock:
            invs = [
                i for i in self._invitations.values()
                if (i["status"] == status if status else i["status"] != "revoked")
            ]  # fmt: skip
            invs.sort(key=lambda i: (i["created_at"], i["id"]), reverse=descending)
            return [dict(i) for i in invs]

    # ------------------------------------------------------------------ keys

    def revoke_key(self) -> None:
        """Every request with this instance's key gets 401 until ``restore_key``."""
        self.revoked = True

    def restore_key(self) -> None:
        """Undo ``revoke_key``."""
        self.revoked = False

    def instance_object(self) -> dict[str, Any]:
        """``GET /instance``."""
        return {
            "object": "instance",
            "id": self.instance_id,
            "environment_type": self.environment,
            "allowed_origins": None,
            "workspace_id": None,
        }

    # ------------------------------------------------------------------ user queries

    def _deleted_between(self, lo: int, hi: int) -> int:
        """Deleted indexes in [lo, hi]."""
        if hi < lo:
            return 0
        return bisect.bisect_right(self._deleted_sorted, hi) - bisect.bisect_left(self._deleted_sorted, lo)

    def _created_bounds(self, q: UserQuery) -> tuple[int, int]:
        """Index range [lo, hi) that satisfies the created_at filters."""
        lo, hi = 0, self._next
        idx = range(self._next)
        if q.created_at_after is not None:
            lo = bisect.bisect_right(idx, q.created_at_after, key=self._created_at)
        if q.created_at_before is not None:
            hi = bisect.bisect_left(idx, q.created_at_before, key=self._created_at)
        return lo, max(lo, hi)

    def _matches(self, index: int, q: UserQuery) -> bool:
        if index in self._deleted:
            return False
        if (
            q.last_active_at_after is not None
            or q.last_active_at_before is not None
            or q.last_active_at_since is not None
        ):
            v = self._val(index, "last_active_at")
            if v is None:
                return False
            if q.last_active_at_after is not None and v <= q.last_active_at_after:
                return False
            if q.last_active_at_before is not None and v >= q.last_active_at_before:
                return False
            if q.last_active_at_since is not None and v < q.last_active_at_since:
                return False
        if q.last_sign_in_at_after is not None or q.last_sign_in_at_before is not None:
            v = self._val(index, "last_sign_in_at")
            if v is None:
                return False
            if q.last_sign_in_at_after is not None and v <= q.last_sign_in_at_after:
                return False
            if q.last_sign_in_at_before is not None and v >= q.last_sign_in_at_before:
                return False
        return not (q.exclude_ids and self.ids.user.encode(index) in q.exclude_ids)

    def _base_order(self, name: str) -> tuple[array, array, array]:
        """Generated users sorted by one field: (non-null indexes ascending, null indexes, values by index).

        Built once per field on first use (about a second per million users), then kept: generated
        values never change; scripted changes live in ``_overrides`` and are merged in.
        """
        cache = self._base_cache.get(name)
        if cache is None:
            getter = getattr(self._factory, name)
            values = array("q", (_NULL if (v := getter(i)) is None else v for i in range(self._n_base)))
            nonnull = array(
                "l", sorted((i for i in range(self._n_base) if values[i] != _NULL), key=values.__getitem__)
            )
            nulls = array("l", (i for i in range(self._n_base) if values[i] == _NULL))
            cache = (nonnull, nulls, values)
            self._base_cache[name] = cache
        return cache

    def _iter_by_field(self, name: str, descending: bool) -> Iterator[int]:
        """Every index (deleted ones too) ordered by a field; nulls last either way; ties by index."""
        if name == "created_at":
            yield from (range(self._next - 1, -1, -1) if descending else range(self._next))
            return
        nonnull, nulls, _ = self._base_order(name)
        changed = {i for i, over in self._overrides.items() if name in over or i >= self._n_base}
        over_nonnull = [i for i in changed if self._val(i, name) is not None]
        over_nulls = sorted(i for i in changed if self._val(i, name) is None)

        def key(i: int) -> tuple[int, int]:
            return (self._val(i, name), i)

        over_nonnull.sort(key=key, reverse=descending)
        base_iter = (i for i in (reversed(nonnull) if descending else nonnull) if i not in changed)
        yield from heapq.merge(base_iter, over_nonnull, key=key, reverse=descending)
        yield from heapq.merge((i for i in nulls if i not in changed), over_nulls)

    def _skip_live(self, start: int, k: int, forward: bool) -> int:
        """The position from which skipping deleted indexes and taking the next live one gives the k-th."""
        i = start + k if forward else start - k
        while True:
            if forward:
                nxt = start + k + self._deleted_between(start, i - 1)
            else:
                nxt = start - k - self._deleted_between(i + 1, start)
            if nxt == i:
                return i
            i = nxt

    def list_users(
        self, q: UserQuery, *, limit: int, offset: int, starting_after: str | None
    ) -> list[dict[str, Any]]:
        """One page of ``GET /users`` (parameters already validated)."""
        with self._lock:
            cursor: int | None = None
            if starting_after is not None:
                cursor = self._index(starting_after)
                if cursor is None:
                    raise unprocessable("`starting_after` is not the id of a user of this instance.")
            lo, hi = self._created_bounds(q)
            indices = self._select(q, lo, hi, cursor, offset, limit)
            return [self._user(i) for i in indices]

    def _select(
        self, q: UserQuery, lo: int, hi: int, cursor: int | None, offset: int, limit: int
    ) -> list[int]:
        if q.include_ids is not None:
            found = {i for uid in q.include_ids if (i := self._index(uid)) is not None and lo <= i < hi}
            rows = [i for i in self._iter_small(found, q.order_field, q.descending) if self._matches(i, q)]
            if cursor is not None:
                rows = [i for i in rows if (i < cursor if q.descending else i > cursor)]
            return rows[offset : offset + limit]
        out: list[int] = []
        if q.order_field == "created_at":
            if q.descending:
                start = hi - 1 if cursor is None else min(hi - 1, cursor - 1)
                stop = lo - 1
                step = -1
            else:
                start = lo if cursor is None else max(lo, cursor + 1)
                stop = hi
                step = 1
            if offset and not q.has_value_filters:
                start = self._skip_live(start, offset, step == 1)
                offset = 0
            i = start
            while (i < stop if step == 1 else i > stop) and len(out) < limit:
                if self._matches(i, q):
                    if offset:
                        offset -= 1
                    else:
                        out.append(i)
                i += step
            return out
        for i in self._iter_by_field(q.order_field, q.descending):
            if lo <= i < hi and self._matches(i, q):
                if offset:
                    offset -= 1
                    continue
                out.append(i)
                if len(out) >= limit:
                    break
        return out

    def _iter_small(self, indices: set[int], name: str, descending: bool) -> list[int]:
        nonnull = [i for i in indices if self._val(i, name) is not None]
        nulls = sorted(i for i in indices if self._val(i, name) is None)
        nonnull.sort(key=lambda i: (self._val(i, name), i), reverse=descending)
        return nonnull + nulls

    def count_users(self, q: UserQuery) -> int:
        """``GET /users/count``."""
        with self._lock:
            lo, hi = self._created_bounds(q)
            if q.include_ids is not None:
                found = {i for uid in q.include_ids if (i := self._index(uid)) is not None and lo <= i < hi}
                return sum(1 for i in found if self._matches(i, q))
            if not q.has_value_filters:
                return (hi - lo) - self._deleted_between(lo, hi - 1)
            if lo == 0 and hi == self._next:
                fast = self._count_one_field(q)
                if fast is not None:
                    return fast
            for name in ("last_active_at", "last_sign_in_at"):
                self._base_order(name)  # value arrays make the scan cheaper
            return sum(1 for i in range(lo, hi) if self._matches(i, q))

    def _count_one_field(self, q: UserQuery) -> int | None:
        """Count by a single activity field with binary searches over the generated values, or None."""
        activity = (q.last_active_at_after, q.last_active_at_before, q.last_active_at_since)
        sign_in = (q.last_sign_in_at_after, q.last_sign_in_at_before, None)
        if q.exclude_ids or (any(v is not None for v in activity) and any(v is not None for v in sign_in)):
            return None
        name, (after, before, since) = (
            ("last_active_at", activity)
            if any(v is not None for v in activity)
            else ("last_sign_in_at", sign_in)
        )
        _, _, values = self._base_order(name)
        ordered = self._sorted_values(name)
        start = 0
        if after is not None:
            start = bisect.bisect_right(ordered, after)
        if since is not None:
            start = max(start, bisect.bisect_left(ordered, since))
        stop = len(ordered) if before is None else bisect.bisect_left(ordered, before)
        count = max(0, stop - start)

        def in_range(v: int) -> bool:
            return (
                v != _NULL
                and (after is None or v > after)
                and (since is None or v >= since)
                and (before is None or v < before)
            )

        touched = {i for i, over in self._overrides.items() if name in over or i >= self._n_base}
        touched |= self._deleted
        for i in touched:
            if i < self._n_base and in_range(values[i]):
                count -= 1
            if self._matches(i, q):
                count += 1
        return count

    def _sorted_values(self, name: str) -> array:
        """The generated values of a field in ascending order (non-null only), for counting by range."""
        key = f"{name}:sorted"
        cache = self._sorted_cache.get(key)
        if cache is None:
            nonnull, _, values = self._base_order(name)
            cache = array("q", (values[i] for i in nonnull))
            self._sorted_cache[key] = cache
        return cache
