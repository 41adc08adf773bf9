"""The stateless cookie round trip that precedes every registration (DESIGN.md §4, DoS).

Before the controller does anything expensive for a connection (TLS handshake, certificate
checks, key management) the client must echo a cookie, in plaintext, on the fresh TCP
connection::

    client → HELLO     [1, 1, nonce (16)]
    server → CHALLENGE [1, 2, issued (ms), difficulty, mac (16)]
    client → RESPONSE  [1, 3, issued, difficulty, mac, nonce, solution (8)]

``mac = HMAC-SHA256(secret, "rmsec cookie v1\\0" || peer || nonce || issued || difficulty)``
truncated to 16 bytes: the server keeps no state per client (it recomputes the MAC), the
cookie is bound to the peer's address and port (so one answer cannot open other connections)
and expires after ``lifetime`` seconds.  The secret rotates every ``rotate`` seconds; the
previous one is still accepted so rotation never fails a client in flight.

``difficulty`` turns the cookie into a client puzzle (Juels and Brainard, 1999) when the
controller is busy: the client must find ``solution`` such that
``SHA-256("rmsec puzzle v1\\0" || mac || nonce || solution)`` starts with ``difficulty`` zero
bits, which costs it about ``2**difficulty`` hashes and the server one.  It is 0 while the
server is idle, so legitimate members pay nothing in the normal case.

Sans-IO: the secret comes from the injected ``rng``, time from ``now``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import math
from typing import Any

from rmsec.errors import LocalError, MalformedPacket
from rmsec.interfaces import Rng
from rmsec.security.untrusted import loads_array
from rmsec.wire.codec import byte_string, check_fields, dumps, int_range, uint

VERSION = 1
HELLO, CHALLENGE, RESPONSE = 1, 2, 3
NONCE_LEN = 16
MAC_LEN = 16
SOLUTION_LEN = 8
MAX_DIFFICULTY = 24
#: Largest pre-TLS message either side accepts.
MAX_MESSAGE = 128

COOKIE_DOMAIN = b"rmsec cookie v1\x00"
PUZZLE_DOMAIN = b"rmsec puzzle v1\x00"

_u8 = uint(8)
_nonce = byte_string(max_len=NONCE_LEN, exact=NONCE_LEN)
_mac = byte_string(max_len=MAC_LEN, exact=MAC_LEN)
_issued = uint(63)
_difficulty = int_range(0, MAX_DIFFICULTY)


def _load(data: bytes, kind: int, fields: tuple[Any, ...]) -> list[Any]:
    values = check_fields(loads_array(data, max_len=MAX_MESSAGE, what="cookie message"),
                          (_u8, _u8, *fields))
    if values[0] != VERSION or values[1] != kind:
        raise MalformedPacket("unexpected cookie message")
    return values[2:]


def encode_hello(nonce: bytes) -> bytes:
    return dumps([VERSION, HELLO, nonce])


def decode_hello_untrusted(data: bytes) -> bytes:
    (nonce,) = _load(data, HELLO, (_nonce,))
    return bytes(nonce)


@dataclasses.dataclass(frozen=True, slots=True)
class Challenge:
    issued: int
    difficulty: int
    mac: bytes

    def encode(self) -> bytes:
        return dumps([VERSION, CHALLENGE, self.issued, self.difficulty, self.mac])

    @classmethod
    def decode_untrusted(cls, data: bytes) -> Challenge:
        issued, difficulty, mac = _load(data, CHALLENGE, (_issued, _difficulty, _mac))
        return cls(issued, difficulty, mac)


@dataclasses.dataclass(frozen=True, slots=True)
class Response:
    issued: int
    difficulty: int
    mac: bytes
    nonce: bytes
    solution: bytes

    def encode(self) -> bytes:
        return dumps([VERSION, RESPONSE, self.issued, self.difficulty, self.mac, self.nonce,
                      self.solution])

    @classmethod
    def decode_untrusted(cls, data: bytes) -> Response:
        issued, difficulty, mac, nonce, solution = _load(
            data, RESPONSE,
            (_issued, _difficulty, _mac, _nonce,
             byte_string(max_len=SOLUTION_LEN, exact=SOLUTION_LEN)),
        )
        return cls(issued, difficulty, mac, nonce, solution)


def _puzzle_ok(mac: bytes, nonce: bytes, solution: bytes, difficulty: int) -> bool:
    if difficulty == 0:
        return True
    digest = hashlib.sha256(PUZZLE_DOMAIN + mac + nonce + solution).digest()
    return int.from_bytes(digest[:4], "big") >> (32 - difficulty) == 0


def solve(challenge: Challenge, nonce: bytes, *, max_difficulty: int = 20) -> Response:
    """The client's answer; :class:`LocalError` if the puzzle is harder than it will pay for.

    Bounded: at most ``2**(difficulty + 4)`` hashes (the chance of not finding a solution in
    that many tries is below ``e**-16``).
    """
    if challenge.difficulty > max_difficulty:
        raise LocalError(f"controller asks for a puzzle of difficulty {challenge.difficulty}")
    tries = 1 << (challenge.difficulty + 4) if challenge.difficulty else 1
    for counter in range(tries):
        solution = counter.to_bytes(SOLUTION_LEN, "big")
        if _puzzle_ok(challenge.mac, nonce, solution, challenge.difficulty):
            return Response(challenge.issued, challenge.difficulty, challenge.mac, nonce, solution)
    raise LocalError("no puzzle solution found")


class CookieGuard:
    """Server side: issue and check cookies without keeping any per-client state."""

    def __init__(
        self,
        *,
        rng: Rng,
        now: float,
        lifetime: float = 10.0,
        rotate: float = 60.0,
        busy_threshold: int = 32,
        max_difficulty: int = 18,
    ) -> None:
        if not 0 <= max_difficulty <= MAX_DIFFICULTY:
            raise LocalError(f"max_difficulty must be within 0..{MAX_DIFFICULTY}")
        self._rng = rng
        self.lifetime = lifetime
        self.rotate = rotate
        self.busy_threshold = busy_threshold
        self.max_difficulty = max_difficulty
        self._secret = rng(32)
        self._previous = self._secret
        self._rotated_at = now
        self.load = 0
        self.counters: dict[str, int] = {"issued": 0, "accepted": 0, "refused": 0}

    @property
    def difficulty(self) -> int:
        """0 while ``load`` is under the threshold; then 8 bits, plus 2 per doubling."""
        if self.load < self.busy_threshold:
            return 0
        doublings = int(math.log2(self.load / self.busy_threshold))
        return min(self.max_difficulty, 8 + 2 * doublings)

    def _rotate(self, now: float) -> None:
        if now - self._rotated_at >= self.rotate:
            self._previous = self._secret
            self._secret = self._rng(32)
            self._rotated_at = now

    @staticmethod
    def _mac(secret: bytes, peer: tuple[str, int], nonce: bytes, issued: int, difficulty: int) -> bytes:
        host = peer[0].encode()[:255]
        msg = b"".join((
            COOKIE_DOMAIN, bytes([len(host)]), host, peer[1].to_bytes(2, "big"), nonce,
            issued.to_bytes(8, "big"), bytes([difficulty]),
        ))
        return hmac.digest(secret, msg, "sha256")[:MAC_LEN]

    def challenge(self, peer: tuple[str, int], hello: bytes, now: float) -> bytes:
        """The CHALLENGE for a HELLO (:class:`MalformedPacket` for anything else)."""
        nonce = decode_hello_untrusted(hello)
        self._rotate(now)
        issued = max(0, int(now * 1000))
        difficulty = self.difficulty
        self.counters["issued"] += 1
        return Challenge(issued, difficulty, self._mac(self._secret, peer, nonce, issued, difficulty)).encode()

    def check(self, peer: tuple[str, int], response: bytes, now: float) -> bool:
        """True when ``response`` answers a cookie this guard issued to ``peer`` lately."""
        try:
            r = Response.decode_untrusted(response)
        except MalformedPacket:
            self.counters["refused"] += 1
            return False
        self._rotate(now)
        age = now * 1000 - r.issued
        ok = (
            -1000 <= age <= self.lifetime * 1000
            and any(
                hmac.compare_digest(self._mac(s, peer, r.nonce, r.issued, r.difficulty), r.mac)
                for s in (self._secret, self._previous)
            )
            and _puzzle_ok(r.mac, r.nonce, r.solution, r.difficulty)
        )
        self.counters["accepted" if ok else "refused"] += 1
        return ok
