"""multimac: the coalition bound is real (w fail, far more than w win at the predicted rate)."""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable

import pytest
from rmsec_plugins.auth_multimac import (
    MultiMacAuth,
    MultiMacSigner,
    cost,
    decode_material_untrusted,
    encode_macs,
    forgery_probability,
    keys_needed,
)

import rmsec.plugins
from rmsec.errors import AuthenticationFailed, ConfigError, MalformedPacket
from rmsec.security import authcrypto
from rmsec.wire.codec import dumps

SENDER = b"sender-3"


def seeded_rng(seed: int) -> Callable[[int], bytes]:
    counter = [0]

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            counter[0] += 1
            out += hashlib.sha256(b"mm %d %d" % (seed, counter[0])).digest()
        return out[:n]

    return rng


def make(w: int, q: float, mac_bits: int = 1, seed: int = 1) -> tuple[MultiMacAuth, MultiMacSigner]:
    cls = rmsec.plugins.get_source_auth("multimac")
    auth = cls(rng=seeded_rng(seed), options={"w": w, "q": q, "mac_bits": mac_bits})
    assert isinstance(auth, MultiMacAuth)
    return auth, auth.signer(sender_id=SENDER, now=0.0)


def coalition_forges(
    auth: MultiMacAuth, signer: MultiMacSigner, coalition: list[bytes], target: bytes, guess: random.Random
) -> bool:
    """The coalition pools every key it holds, MACs what it can, guesses the rest."""
    keys = auth.cost.keys
    bits = auth.mac_bits
    pooled: dict[int, bytes] = {}
    for member in coalition:
        pooled.update(decode_material_untrusted(signer.material_for(member), keys))
    packet = b"forged by %d members for %s" % (len(coalition), target)
    digest = authcrypto.multimac_digest(SENDER, packet)
    order = sorted(pooled)
    known = authcrypto.BitMacBank([pooled[i] for i in order], bits).macs(digest)
    mask = (1 << bits) - 1
    macs = {i: (known >> (bits * (len(order) - 1 - n))) & mask for n, i in enumerate(order)}
    value = 0
    for i in range(keys):
        value = (value << bits) | (macs[i] if i in macs else guess.getrandbits(bits))
    victim = auth.verifier(signer.params, signer.material_for(target), now=0.0)
    try:
        victim.verify(packet, encode_macs(value, keys, bits), 0.0)
    except AuthenticationFailed:
        return False
    return True


def success_rate(auth: MultiMacAuth, signer: MultiMacSigner, size: int, trials: int) -> float:
    guess = random.Random(size)
    wins = 0
    for t in range(trials):
        members = [b"m%d-%d" % (t, j) for j in range(size)]
        wins += coalition_forges(auth, signer, members, b"target-%d" % t, guess)
    return wins / trials


def test_l_derived_from_w_and_q() -> None:
    c = cost(8, 1e-6, 1)
    assert forgery_probability(c.keys, 8, 8, 1) <= 1e-6 < forgery_probability(c.keys - 1, 8, 8, 1)
    # Canetti et al.: about 2 e (w + 1) ln(1/q) one-bit MACs.
    assert c.keys == pytest.approx(2 * math.e * 9 * math.log(1e6), rel=0.1)
    assert c.trailer_bytes <= c.keys // 8 + 4
    assert keys_needed(8, 1e-6, 8) < c.keys  # longer MACs, fewer keys, more bytes
    with pytest.raises(ConfigError):
        make(4000, 1e-30)


def test_coalition_of_w_fails() -> None:
    auth, signer = make(w=4, q=1e-9)
    assert success_rate(auth, signer, size=4, trials=150) == 0.0


@pytest.mark.parametrize(("size", "trials"), [(2, 400), (8, 400), (30, 120)])
def test_coalitions_succeed_at_the_predicted_rate(size: int, trials: int) -> None:
    """w = 2, q = 0.01: l = 60 one-bit MACs.  Measured rates match the formula (4 sigma)."""
    auth, signer = make(w=2, q=0.01)
    predicted = forgery_probability(auth.cost.keys, size, 2, 1)
    measured = success_rate(auth, signer, size, trials)
    sigma = math.sqrt(max(predicted * (1 - predicted), 1 / trials) / trials)
    assert abs(measured - predicted) <= 4 * sigma + 1e-9, (size, measured, predicted)
    if size == 2:
        assert predicted <= 0.01
    if size == 30:  # "far larger than w": the bound is not a property of the code, it is w
        assert predicted > 0.99 and measured > 0.95


def test_subset_is_fixed_per_member_and_about_one_in_w_plus_one() -> None:
    auth, signer = make(w=8, q=1e-6)
    assert signer.material_for(b"alice") == signer.material_for(b"alice")
    sizes = [len(signer.subset(b"m%d" % i)) for i in range(200)]
    mean = sum(sizes) / len(sizes)
    assert mean == pytest.approx(auth.cost.keys / 9, rel=0.1)
    assert min(sizes) >= 1


def test_trailer_padding_and_length_are_strict() -> None:
    auth, signer = make(w=2, q=0.01)  # 60 keys: 8 bytes, 4 padding bits
    verifier = auth.verifier(signer.params, signer.material_for(b"a"), now=0.0)
    good = signer.protect(b"p", 0.0)
    assert verifier.verify(b"p", good, 0.0)
    for bad in (dumps([b"\xff" * 8]), dumps([bytes(7)]), dumps([bytes(9)])):
        with pytest.raises(MalformedPacket):
            verifier.verify(b"p", bad, 0.0)


def test_material_must_match_params() -> None:
    auth, signer = make(w=2, q=0.01)
    _, other = make(w=8, q=1e-6)
    with pytest.raises(MalformedPacket):
        auth.verifier(signer.params, other.material_for(b"a"), now=0.0)
    with pytest.raises(MalformedPacket):
        auth.verifier(signer.params, dumps([1, bytes(8), b""]), now=0.0)  # holds no key
