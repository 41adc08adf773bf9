"""The stateless cookie (and puzzle) that precedes registration."""

from __future__ import annotations

import pytest

from rmsec.errors import LocalError, MalformedPacket
from rmsec.security import cookie
from tests.unit.security_helpers import seeded_rng

PEER = ("127.0.0.1", 50000)


def exchange(guard: cookie.CookieGuard, now: float, peer: tuple[str, int] = PEER) -> bytes:
    nonce = b"n" * 16
    challenge = cookie.Challenge.decode_untrusted(guard.challenge(peer, cookie.encode_hello(nonce), now))
    return cookie.solve(challenge, nonce).encode()


def test_round_trip_needs_no_state() -> None:
    guard = cookie.CookieGuard(rng=seeded_rng(1), now=0.0)
    response = exchange(guard, 1.0)
    assert guard.check(PEER, response, 1.5)
    assert guard.counters == {"issued": 1, "accepted": 1, "refused": 0}


def test_bound_to_peer_and_lifetime() -> None:
    guard = cookie.CookieGuard(rng=seeded_rng(1), now=0.0, lifetime=10.0)
    response = exchange(guard, 1.0)
    assert not guard.check(("127.0.0.1", 50001), response, 1.5)
    assert not guard.check(("127.0.0.2", 50000), response, 1.5)
    assert not guard.check(PEER, response, 12.0)


def test_forged_cookie_refused_and_rotation_keeps_one_previous_secret() -> None:
    guard = cookie.CookieGuard(rng=seeded_rng(1), now=0.0, rotate=5.0, lifetime=100.0)
    other = cookie.CookieGuard(rng=seeded_rng(2), now=0.0)
    assert not guard.check(PEER, exchange(other, 1.0), 1.0)
    response = exchange(guard, 1.0)
    guard.challenge(PEER, cookie.encode_hello(b"x" * 16), 6.0)  # rotates
    assert guard.check(PEER, response, 6.0)
    guard.challenge(PEER, cookie.encode_hello(b"x" * 16), 12.0)  # rotates again
    assert not guard.check(PEER, response, 12.0)


def test_puzzle_difficulty_follows_load_and_is_enforced() -> None:
    guard = cookie.CookieGuard(rng=seeded_rng(1), now=0.0, busy_threshold=4, max_difficulty=12)
    assert guard.difficulty == 0
    guard.load = 4
    assert guard.difficulty == 8
    guard.load = 1000
    assert guard.difficulty == 12
    guard.load = 4
    nonce = b"n" * 16
    challenge = cookie.Challenge.decode_untrusted(guard.challenge(PEER, cookie.encode_hello(nonce), 0.0))
    assert challenge.difficulty == 8
    good = cookie.solve(challenge, nonce)
    assert guard.check(PEER, good.encode(), 0.0)
    lazy = cookie.Response(good.issued, good.difficulty, good.mac, nonce, b"\x00" * 8)
    cheat = cookie.Response(good.issued, 0, good.mac, nonce, b"\x00" * 8)
    assert not guard.check(PEER, cheat.encode(), 0.0)  # difficulty is under the MAC
    if lazy.solution != good.solution:
        assert not guard.check(PEER, lazy.encode(), 0.0)


def test_client_refuses_an_absurd_puzzle() -> None:
    with pytest.raises(LocalError):
        cookie.solve(cookie.Challenge(0, 24, b"m" * 16), b"n" * 16, max_difficulty=20)


@pytest.mark.parametrize("junk", [b"", b"\x83\x01\x02", b"\x00" * 200, cookie.encode_hello(b"short")])
def test_garbage(junk: bytes) -> None:
    guard = cookie.CookieGuard(rng=seeded_rng(1), now=0.0)
    with pytest.raises(MalformedPacket):
        guard.challenge(PEER, junk, 0.0)
    assert not guard.check(PEER, junk, 0.0)


def test_a_flood_of_hellos_and_forged_answers_costs_no_state() -> None:
    """Join flood at the sans-IO level: the guard keeps nothing per client, so 5,000 bogus
    hellos and answers leave it exactly as big as before, and a real client still passes."""
    guard = cookie.CookieGuard(rng=seeded_rng(1), now=0.0)
    shape = {k: len(v) if isinstance(v, (dict, set, list, bytes)) else None for k, v in vars(guard).items()}
    for i in range(5000):
        peer = ("127.0.0.1", 1024 + i)
        guard.challenge(peer, cookie.encode_hello(i.to_bytes(16, "big")), 0.001 * i)
        forged = cookie.Response(int(i), 0, b"\x00" * 16, i.to_bytes(16, "big"), b"\x00" * 8)
        assert not guard.check(peer, forged.encode(), 0.001 * i)
    after = {k: len(v) if isinstance(v, (dict, set, list, bytes)) else None for k, v in vars(guard).items()}
    assert after == shape
    assert guard.check(PEER, exchange(guard, 5.0), 5.0)
