"""Deterministic Clerk-shaped objects: each one is a pure function of (instance key, index).

Nothing here holds state. ``UserFactory`` answers the four timestamps the API filters and sorts on
with a few integer operations (so a million users can be counted and sorted without building
them), and builds the full ~1.5 KB user dict only when a page needs it. Field sets follow the
Backend API spec (``components.schemas.User`` etc.) and the webhook spec, which want the same keys.
"""

from __future__ import annotations

import random
from typing import Any

from clerk_sync.simulator.ids import MASK64, IdCodec, b62, hash3, mix64

T0_MS = 1_672_531_200_000
"""2023-01-01T00:00:00Z: the first generated user is created shortly after."""
SPAN_MS = 2 * 365 * 86_400_000
"""Generated users are spread over two years, whatever their number."""
GEN_END_MS = T0_MS + SPAN_MS + 30 * 86_400_000
"""No generated timestamp is later than this (so scripted changes at "now" always sort last)."""
DAY_MS = 86_400_000
DAY_END_MS = GEN_END_MS - GEN_END_MS % DAY_MS

FIRST_NAMES = (
    "Ada", "Alan", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Frances", "John",
    "Radia", "Tim", "Hedy", "Guido", "Katherine", "Bjarne", "Sophie", "Donald", "Anita", "Edsger",
    "Joan", "Niklaus", "Shafi", "Leslie", "Karen", "Yukihiro", "Mary", "Brian", "Adele", "Ivan",
    "Lynn", "Rasmus", "Jean", "Whitfield", "Evelyn", "Larry", "Carol", "Martin", "Ruth", "James",
)  # fmt: skip
LAST_NAMES = (
    "Lovelace", "Turing", "Hopper", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie", "Allen",
    "McCarthy", "Perlman", "Berners-Lee", "Lamarr", "van Rossum", "Johnson", "Stroustrup", "Wilson",
    "Knuth", "Borg", "Dijkstra", "Clarke", "Wirth", "Goldwasser", "Lamport", "Sparck Jones",
    "Matsumoto", "Keller", "Kernighan", "Goldberg", "Sutherland", "Conway", "Lerdorf", "Sammet",
    "Diffie", "Boyd", "Page", "Shaw", "Fowler", "Nussinov", "Gosling",
)  # fmt: skip
DOMAINS = (
    "example.com", "example.org", "mail.example.net", "acme.test", "globex.test", "initech.test",
    "umbrella.test", "hooli.test", "piedpiper.test", "stark.test",
)  # fmt: skip
PLANS = ("free", "starter", "pro", "business", "enterprise")
ROLES = ("viewer", "editor", "admin", "owner", "billing")
LOCALES = (None, "en-US", "de-DE", "fr-FR", "pt-PT")
NOTES = ("", "vip", "trial extended", "migrated from auth0")
THEMES = ("light", "dark", "system")
BROWSERS = (("Chrome", "124.0.0.0"), ("Firefox", "126.0"), ("Safari", "17.4.1"), ("Edge", "124.0.2478.80"))
PLACES = (
    ("Berlin", "DE"), ("Lisbon", "PT"), ("New York", "US"), ("San Francisco", "US"), ("Toronto", "CA"),
    ("London", "GB"), ("Paris", "FR"), ("Tokyo", "JP"), ("Sydney", "AU"), ("São Paulo", "BR"),
)  # fmt: skip
ORG_WORDS = (
    "Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Soylent", "Tyrell", "Wayne",
    "Stark", "Wonka", "Cyberdyne", "Aperture", "Massive", "Dynamic", "Black Mesa", "Oscorp",
    "Gringotts", "Monarch", "Nakatomi",
)  # fmt: skip
ORG_SUFFIXES = ("Labs", "Inc", "Group", "Systems", "Studio", "Partners", "Works", "Co")
SESSION_END_STATUSES = ("ended", "expired", "removed", "revoked", "abandoned", "replaced")
ADMIN_PERMISSIONS = [
    "org:sys_profile:manage",
    "org:sys_profile:delete",
    "org:sys_memberships:read",
    "org:sys_memberships:manage",
    "org:sys_domains:read",
    "org:sys_domains:manage",
]
MEMBER_PERMISSIONS = ["org:sys_memberships:read"]


def day_floor(ts_ms: int) -> int:
    """Midnight UTC of the day of ``ts_ms``: Clerk's ``last_active_at`` has day precision."""
    return ts_ms - ts_ms % DAY_MS


def image_url(kind: str, key: int, index: int) -> str:
    """A Clerk-CDN-looking image URL (long, like the real ones)."""
    return (
        f"https://img.clerk.com/eyJ0eXBlIjoi{kind}In0{mix64(key, index, 98):016x}{mix64(key, index, 99):016x}"
    )


class Codecs:
    """The id codecs of one instance."""

    def __init__(self, key: int) -> None:
        self.user = IdCodec("user_", key)
        self.email = IdCodec("idn_", key)
        self.phone = IdCodec("idn_", key ^ 0x5A5A)
        self.session = IdCodec("sess_", key)
        self.client = IdCodec("client_", key)
        self.activity = IdCodec("sess_activity_", key)
        self.org = IdCodec("org_", key)
        self.membership = IdCodec("orgmem_", key)
        self.invitation = IdCodec("inv_", key)


class UserFactory:
    """Generated users ``0 .. count-1`` of one instance: cheap key fields, full dicts on demand."""

    def __init__(self, key: int, count: int, codecs: Codecs) -> None:
        self.key = key
        self.count = count
        self.ids = codecs
        self.gap_ms = max(1000, SPAN_MS // max(count, 1))

    def _r(self, index: int, salt: int) -> int:
        return hash3(self.key, index, salt)

    def created_at(self, index: int) -> int:
        """Strictly increasing with ``index`` (so created_at ranges are index ranges)."""
        return T0_MS + index * self.gap_ms + self._r(index, 1) % self.gap_ms

    def times(self, index: int) -> tuple[int, int | None, int | None, int]:
        """(created_at, last_sign_in_at, last_active_at, updated_at) from two hashes.

        About one user in ten never signed in (imported): both activity fields are null.
        ``last_active_at`` has day precision, on or after the day of the last sign-in;
        ``updated_at`` is a little after the later of creation and last sign-in.
        """
        created = self.created_at(index)
        h = self._r(index, 2)
        bump = (h >> 40) % 3_600_000
        if h % 10 == 0:
            return created, None, None, created + bump
        sign_in = created + (h >> 4) % (GEN_END_MS - created)
        spread = ((h * 0xD1B54A32D192ED03) & MASK64) >> 20
        active = min(day_floor(sign_in + spread % (20 * DAY_MS)), DAY_END_MS)
        return created, sign_in, active, sign_in + bump

    def last_sign_in_at(self, index: int) -> int | None:
        """Exact (ms); None for users who never signed in."""
        return self.times(index)[1]

    def last_active_at(self, index: int) -> int | None:
        """Day precision; None for users who never signed in."""
        return self.times(index)[2]

    def updated_at(self, index: int) -> int:
        """A little after the later of creation and last sign-in."""
        return self.times(index)[3]

    def session_count(self, index: int) -> int:
        """Generated sessions of a user: 0 if never signed in, else 1 to 3."""
        if self.last_sign_in_at(index) is None:
            return 0
        return 1 + self._r(index, 6) % 3

    def user(self, index: int) -> dict[str, Any]:
        """The full user object (as ``GET /users`` serves it) for a generated index.

        Choices are bit fields of three hashes rather than draws from a PRNG: this runs 500 times
        per page and is the simulator's hot path.
        """
        r = self._r(index, 5)
        s = (r * 0xD1B54A32D192ED03 + 0x632BE59BD9B4E019) & MASK64
        s ^= s >> 29
        t = (s * 0x9E3779B97F4A7C15 + 0x8CB92BA72F3D8DD7) & MASK64
        t ^= t >> 31
        ids = self.ids
        created, sign_in, active, updated = self.times(index)
        first = FIRST_NAMES[r % 40]
        last = LAST_NAMES[(r >> 6) % 40]
        local = f"{first}.{last}".lower().replace(" ", "").replace("-", "")
        number = 1 + (r >> 12) % 9999
        emails = [
            email_address(
                ids.email.encode(index, 0),
                f"{local}{number}@{DOMAINS[(r >> 26) % 10]}",
                created,
                verified=True,
            )
        ]
        if (r >> 30) % 100 < 25:
            emails.append(
                email_address(
                    ids.email.encode(index, 1),
                    f"{first.lower()}{number}@{DOMAINS[(r >> 37) % 10]}",
                    created + 1 + t % (30 * DAY_MS),
                    verified=(r >> 41) % 10 < 6,
                )
            )
        phones = []
        if (r >> 45) % 10 < 3:
            phones.append(phone_number(ids.phone.encode(index, 0), f"+1555{(t >> 32) % 10**7:07d}", created))
        username = f"{local[:12]}{number}" if (r >> 49) & 1 else None
        mfa = (r >> 50) % 5 == 0
        has_image = (r >> 53) % 5 < 2
        password = (r >> 56) % 10 < 7
        return {
            "id": ids.user.encode(index),
            "object": "user",
            "external_id": f"ext-{index:08d}" if (r >> 60) < 5 else None,
            "primary_email_address_id": emails[0]["id"],
            "primary_phone_number_id": phones[0]["id"] if phones else None,
            "primary_web3_wallet_id": None,
            "username": username,
            "first_name": first,
            "last_name": last,
            "locale": LOCALES[s % 5],
            "profile_image_url": "https://www.gravatar.com/avatar?d=mp",
            "image_url": f"https://img.clerk.com/eyJ0eXBlIjoi{'InByb3h5Ii' if has_image else 'ImRlZmF1bHQi'}In0"
            f"{s:016x}{t:016x}",
            "has_image": has_image,
            "public_metadata": {
                "plan": PLANS[(s >> 3) % 5],
                "role": ROLES[(s >> 6) % 5],
                "onboarded": (s >> 9) % 5 != 0,
            },
            "private_metadata": {
                "stripe_customer_id": f"cus_{s ^ t:x}",
                "crm_id": 100_000 + (s >> 12) % 900_000,
                "notes": NOTES[(s >> 32) % 4],
            },
            "unsafe_metadata": {"theme": THEMES[(s >> 34) % 3]},
            "email_addresses": emails,
            "phone_numbers": phones,
            "web3_wallets": [],
            "passkeys": [],
            "password_enabled": password,
            "two_factor_enabled": mfa,
            "totp_enabled": mfa,
            "backup_code_enabled": mfa,
            "mfa_enabled_at": created + DAY_MS if mfa else None,
            "mfa_disabled_at": None,
            "password_last_updated_at": created if password else None,
            "external_accounts": [],
            "saml_accounts": [],
            "enterprise_accounts": [],
            "last_sign_in_at": sign_in,
            "banned": False,
            "locked": False,
            "lockout_expires_in_seconds": None,
            "verification_attempts_remaining": 100,
            "updated_at": updated,
            "created_at": created,
            "delete_self_enabled": True,
            "create_organization_enabled": True,
            "create_organizations_limit": None,
            "last_active_at": active,
            "legal_accepted_at": created if (s >> 36) & 1 else None,
            "bypass_client_trust": False,
        }

    def sessions(self, index: int) -> list[dict[str, Any]]:
        """The generated sessions of a user, oldest first; the newest is active."""
        count = self.session_count(index)
        if not count:
            return []
        rnd = random.Random(self._r(index, 8))
        created_user = self.created_at(index)
        sign_in = self.last_sign_in_at(index) or created_user
        out = []
        for j in range(count):
            newest = j == count - 1
            start = sign_in if newest else created_user + (sign_in - created_user) * (j + 1) // (count + 1)
            active_until = start + rnd.randrange(60_000, 3 * DAY_MS)
            status = "active" if newest else rnd.choice(SESSION_END_STATUSES)
            out.append(
                session(
                    self.ids,
                    index,
                    j,
                    user_id=self.ids.user.encode(index),
                    status=status,
                    created_at=start,
                    last_active_at=active_until,
                    rnd=rnd,
                )
            )
        return out


def email_address(ident: str, address: str, created_at: int, *, verified: bool) -> dict[str, Any]:
    """An EmailAddress object with an email-code verification."""
    return {
        "id": ident,
        "object": "email_address",
        "email_address": address,
        "reserved": False,
        "verification": {
            "object": "verification_otp",
            "status": "verified" if verified else "unverified",
            "strategy": "email_code",
            "attempts": 1 if verified else 0,
            "expire_at": created_at + 600_000,
        },
        "linked_to": [],
        "matches_sso_connection": False,
        "created_at": created_at,
        "updated_at": created_at,
    }


def phone_number(ident: str, number: str, created_at: int) -> dict[str, Any]:
    """A verified PhoneNumber object."""
    return {
        "id": ident,
        "object": "phone_number",
        "phone_number": number,
        "reserved_for_second_factor": False,
        "default_second_factor": False,
        "reserved": False,
        "verification": {
            "object": "verification_otp",
            "status": "verified",
            "strategy": "phone_code",
            "attempts": 1,
            "expire_at": created_at + 600_000,
            "channel": "sms",
        },
        "linked_to": [],
        "backup_codes": None,
        "created_at": created_at,
        "updated_at": created_at,
    }


def session(
    ids: Codecs,
    user_index: int,
    number: int,
    *,
    user_id: str,
    status: str,
    created_at: int,
    last_active_at: int,
    rnd: random.Random,
) -> dict[str, Any]:
    """A Session object (without ``tasks``: the webhook schema does not allow it)."""
    browser, version = rnd.choice(BROWSERS)
    city, country = rnd.choice(PLACES)
    mobile = rnd.random() < 0.3
    return {
        "object": "session",
        "id": ids.session.encode(user_index, number),
        "user_id": user_id,
        "client_id": ids.client.encode(user_index, number),
        "actor": None,
        "status": status,
        "last_active_organization_id": None,
        "last_active_at": last_active_at,
        "latest_activity": {
            "object": "session_activity",
            "id": ids.activity.encode(user_index, number),
            "device_type": "iPhone" if mobile else "Macintosh",
            "is_mobile": mobile,
            "browser_name": browser,
            "browser_version": version,
            "ip_address": f"203.0.113.{rnd.randrange(1, 255)}",
            "city": city,
            "country": country,
        },
        "expire_at": created_at + 7 * DAY_MS,
        "abandon_at": created_at + 30 * DAY_MS,
        "updated_at": last_active_at,
        "created_at": created_at,
    }


def organization(ids: Codecs, key: int, index: int, created_by: str | None) -> dict[str, Any]:
    """A generated Organization (``members_count`` is added when asked for)."""
    rnd = random.Random(mix64(key, index, 20))
    name = f"{rnd.choice(ORG_WORDS)} {rnd.choice(ORG_SUFFIXES)} {index}"
    created = T0_MS + rnd.randrange(SPAN_MS)
    has_image = rnd.random() < 0.5
    org: dict[str, Any] = {
        "object": "organization",
        "id": ids.org.encode(index),
        "name": name,
        "slug": name.lower().replace(" ", "-"),
        "image_url": image_url("InByb3h5Ii" if has_image else "ImRlZmF1bHQi", key, index + 10**9),
        "has_image": has_image,
        "max_allowed_memberships": rnd.choice((0, 5, 20, 100)),
        "admin_delete_enabled": True,
        "public_metadata": {"tier": rnd.choice(PLANS)},
        "private_metadata": {"billing_id": f"acct_{b62(mix64(key, index, 21), 12)}"},
        "created_at": created,
        "updated_at": created + rnd.randrange(30 * DAY_MS),
        "role_set_key": None,
    }
    if created_by is not None:
        org["created_by"] = created_by
    return org


def membership_core(
    ids: Codecs, index: int, org_id: str, user_id: str, role: str, created_at: int
) -> dict[str, Any]:
    """The stored part of a membership; ``organization`` and ``public_user_data`` are added when served."""
    admin = role == "org:admin"
    return {
        "id": ids.membership.encode(index),
        "object": "organization_membership",
        "role": role,
        "role_name": "Admin" if admin else "Member",
        "permissions": list(ADMIN_PERMISSIONS if admin else MEMBER_PERMISSIONS),
        "public_metadata": {},
        "private_metadata": {},
        "organization_id": org_id,
        "user_id": user_id,
        "created_at": created_at,
        "updated_at": created_at,
    }


def invitation(ids: Codecs, key: int, index: int, status: str, created_at: int, email: str) -> dict[str, Any]:
    """An instance Invitation."""
    ident = ids.invitation.encode(index)
    return {
        "object": "invitation",
        "id": ident,
        "email_address": email,
        "public_metadata": {"invited_by": "admin"},
        "revoked": status == "revoked",
        "status": status,
        "url": f"https://accounts.example.com/sign-up?__clerk_ticket={b62(mix64(key, index, 30), 32)}",
        "expires_at": created_at + 30 * DAY_MS,
        "created_at": created_at,
        "updated_at": created_at,
    }
