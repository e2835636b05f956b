"""Clerk-shaped ids that encode their position, so the simulator never needs an id -> object map.

An id looks like Clerk's (``user_`` + 27 base62 characters). Inside, it carries an index (the
object's position in creation order), a small sub-number (e.g. the n-th session of a user) and a
keyed checksum: decoding is a few integer operations, foreign or made-up ids fail the checksum, and
ids sort in creation order (as Clerk's KSUID-based ids roughly do).
"""

from __future__ import annotations

import hashlib

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_INDEX = {c: n for n, c in enumerate(ALPHABET)}
MASK64 = (1 << 64) - 1
_CHECK_MASK = (1 << 41) - 1
_MAX_INDEX = (1 << 30) - 1
_MAX_SUB = (1 << 16) - 1


def stable_hash(text: str) -> int:
    """64-bit hash of a string that is the same in every process (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def mix64(*parts: int) -> int:
    """Deterministic 64-bit mix of integers (splitmix64 finaliser over a running state)."""
    z = 0x9E3779B97F4A7C15
    for part in parts:
        z = (z ^ (part & MASK64)) * 0xBF58476D1CE4E5B9 & MASK64
        z = (z ^ (z >> 31)) * 0x94D049BB133111EB & MASK64
        z ^= z >> 29
    return z


_PAIRS = [a + b for a in ALPHABET for b in ALPHABET]  # two digits per divmod: ids are the hot path


def hash3(a: int, b: int, c: int) -> int:
    """A cheaper 64-bit hash of three integers (one splitmix64 round): the per-field hot path."""
    z = (a + b * 0x9E3779B97F4A7C15 + c * 0xD1B54A32D192ED03) & MASK64
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & MASK64
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB & MASK64
    return z ^ (z >> 31)


def b62(value: int, width: int) -> str:
    """Fixed-width base62 (ASCII-ordered alphabet, so string order equals numeric order)."""
    chunks = []
    for _ in range(width // 2):
        value, rem = divmod(value, 3844)
        chunks.append(_PAIRS[rem])
    if width % 2:
        value, rem = divmod(value, 62)
        chunks.append(ALPHABET[rem])
    if value:
        raise ValueError("value too large for width")
    return "".join(reversed(chunks))


def unb62(text: str) -> int:
    """Inverse of ``b62``; raises ``KeyError`` on a character outside the alphabet."""
    value = 0
    for char in text:
        value = value * 62 + _INDEX[char]
    return value


class IdCodec:
    """Encodes (index, sub) as ``<prefix>2<26 base62>`` under a per-instance key, and back.

    The 26 characters are three fixed-width fields: 11 constant per (instance, prefix) (like the
    time prefix that Clerk's KSUID-based ids share), 8 for ``index << 16 | sub`` (so ids sort in
    creation order) and a 41-bit keyed checksum in the last 7 (so made-up ids do not decode).
    Fields are encoded separately because small-integer base62 is the simulator's hot path.
    """

    def __init__(self, prefix: str, key: int) -> None:
        self.prefix = prefix
        self._key = mix64(key, stable_hash(prefix))
        self._head = f"{prefix}2{b62(self._key % 62**11, 11)}"

    def _check(self, index: int, sub: int) -> int:
        return hash3(self._key, index, sub) & _CHECK_MASK

    def encode(self, index: int, sub: int = 0) -> str:
        """The id of the object at ``index`` (and ``sub``)."""
        if not (0 <= index <= _MAX_INDEX and 0 <= sub <= _MAX_SUB):
            raise ValueError("index or sub out of range")
        pairs = _PAIRS
        v, a = divmod((index << 16) | sub, 3844)
        v, b = divmod(v, 3844)
        d, c = divmod(v, 3844)
        w, e = divmod(self._check(index, sub), 3844)
        w, f = divmod(w, 3844)
        h, g = divmod(w, 3844)
        return (
            f"{self._head}{pairs[d]}{pairs[c]}{pairs[b]}{pairs[a]}{ALPHABET[h]}{pairs[g]}{pairs[f]}{pairs[e]}"
        )

    def decode(self, ident: str) -> tuple[int, int] | None:
        """``(index, sub)`` for an id this codec made, else None."""
        head = self._head
        if len(ident) != len(head) + 15 or not ident.startswith(head):
            return None
        try:
            mid = unb62(ident[len(head) : len(head) + 8])
            check = unb62(ident[len(head) + 8 :])
        except KeyError:
            return None
        index, sub = mid >> 16, mid & _MAX_SUB
        if check != self._check(index, sub):
            return None
        return index, sub
