"""rmsec.security.authcrypto: the constructions every auth plugin builds on, and the rules
the plugins keep (sans-IO imports, pinned encodings)."""

from __future__ import annotations

import ast
import hashlib
import hmac
import pathlib
from collections.abc import Callable

import cbor2
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

import rmsec.plugins
from rmsec.errors import MalformedPacket
from rmsec.security import authcrypto

ROOT = pathlib.Path(__file__).resolve().parents[2]


def seeded_rng(seed: int) -> Callable[[int], bytes]:
    counter = [0]

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            counter[0] += 1
            out += hashlib.sha256(b"kat %d %d" % (seed, counter[0])).digest()
        return out[:n]

    return rng


def reference_mth(leaves: list[bytes], length: int) -> bytes:
    """RFC 9162 §2.1.1 MTH, written from the definition."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    left, right = reference_mth(leaves[:k], length), reference_mth(leaves[k:], length)
    return hashlib.sha256(b"\x01" + left + right).digest()[:length]


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8, 13, 64, 100])
def test_merkle_tree_is_rfc9162(count: int) -> None:
    leaves = [authcrypto.merkle_leaf(b"%d" % i, 16) for i in range(count)]
    tree = authcrypto.MerkleBatch(leaves, 16)
    assert tree.root == reference_mth(leaves, 16)
    for i in range(count):
        assert len(tree.paths[i]) == authcrypto.merkle_path_length(i, count)
        assert authcrypto.merkle_root_from_path(leaves[i], i, count, tree.paths[i], 16) == tree.root
        if count > 1:
            wrong = (i + 1) % count
            assert authcrypto.merkle_root_from_path(leaves[i], wrong, count, tree.paths[i], 16) != tree.root
    assert authcrypto.merkle_root_from_path(leaves[0], count, count, tree.paths[0], 16) is None


def test_merkle_climb_stops_at_a_known_node() -> None:
    leaves = [authcrypto.merkle_leaf(b"%d" % i, 16) for i in range(8)]
    tree = authcrypto.MerkleBatch(leaves, 16)
    known = {leaves[1]}
    assert authcrypto.merkle_climb(leaves[1], 1, 8, tree.paths[1], 16, known) == [leaves[1]]
    nodes = authcrypto.merkle_climb(leaves[0], 0, 8, tree.paths[0], 16, {tree.root})
    assert nodes is not None and nodes[-1] == tree.root and len(nodes) == 4


@settings(max_examples=100, deadline=None)
@given(index=st.integers(-2, 70), count=st.integers(0, 70), path=st.lists(st.binary(min_size=16, max_size=16), max_size=9))
def test_merkle_climb_never_raises(index: int, count: int, path: list[bytes]) -> None:
    authcrypto.merkle_climb(bytes(16), index, count, path, 16)


def test_signatures_are_drawn_from_the_injected_rng() -> None:
    for alg in authcrypto.SIGNATURES.values():
        a, b = alg.generate(seeded_rng(5)), alg.generate(seeded_rng(5))
        assert a.verifying_key().public_bytes() == b.verifying_key().public_bytes()
        assert len(a.verifying_key().public_bytes()) == alg.public_len
        signature = a.sign(b"m")
        assert len(signature) == alg.signature_len
        key = alg.load_public_untrusted(a.verifying_key().public_bytes())
        assert key.verify(signature, b"m")
        assert not key.verify(signature, b"n")
        assert not key.verify(signature[:-1], b"m")
        assert not key.verify(bytes(64), b"m")
        with pytest.raises(MalformedPacket):
            alg.load_public_untrusted(bytes(alg.public_len - 1))
    with pytest.raises(MalformedPacket):
        authcrypto.SIGNATURES["ecdsa-p256"].load_public_untrusted(b"\x02" + b"\xff" * 32)
    ed = authcrypto.SIGNATURES["ed25519"].generate(seeded_rng(5))
    assert ed.sign(b"m") == ed.sign(b"m")  # Ed25519 is deterministic


def test_bit_mac_bank_is_aes_of_the_digest() -> None:
    keys = [bytes([i]) * 16 for i in range(10)]
    digest = bytes(range(16))
    for bits in (1, 3, 8):
        value = authcrypto.BitMacBank(keys, bits).macs(digest)
        expected = 0
        for k in keys:
            block = Cipher(algorithms.AES(k), modes.ECB()).encryptor().update(digest)
            expected = (expected << bits) | (block[0] >> (8 - bits))
        assert value == expected


@pytest.mark.parametrize("key_len", [0, 16, 32, 64, 65, 100])
def test_mac_key_is_hmac_sha256(key_len: int) -> None:
    key = bytes(range(key_len))
    data = b"packet bytes " * 80
    assert authcrypto.MacKey(key).tag(data, 32) == hmac.digest(key, data, "sha256")
    prefixed = authcrypto.MacKey(key, b"domain\x00")
    assert prefixed.tag(data, 16) == hmac.digest(key, b"domain\x00" + data, "sha256")[:16]
    tag = hmac.digest(key, b"domain\x00" + data, "sha256")[:12]
    assert prefixed.matches(data, tag)
    assert not prefixed.matches(data + b"!", tag)
    assert prefixed.tag(data, 16) == prefixed.tag(data, 16)  # the kept states are not consumed


@settings(max_examples=150, deadline=None)
@given(
    index=st.integers(-2, 70),
    count=st.integers(0, 70),
    path=st.lists(st.binary(min_size=16, max_size=16), max_size=9),
    known_at=st.integers(0, 10),
)
def test_packed_climb_is_the_same_climb(index: int, count: int, path: list[bytes], known_at: int) -> None:
    """merkle_climb_packed reads the path where a canonical trailer holds it (one CBOR head
    before each node): it must climb exactly as over the bare nodes (merkle_climb, whose
    roots the tests above check against MerkleBatch's)."""
    leaf = bytes(16)
    full = authcrypto.merkle_climb(leaf, index, count, path, 16)
    known = {full[min(known_at, len(full) - 1)]} if full else set()
    packed = b"".join(b"\x50" + node for node in path)
    for k in (frozenset(), known):
        assert authcrypto.merkle_climb_packed(leaf, index, count, packed, 17, 16, k) == (
            authcrypto.merkle_climb(leaf, index, count, path, 16, k)
        )
    assert authcrypto.merkle_climb_packed(leaf, index, count, packed + b"x", 17, 16) is None


def test_emss_v2_encoding_from_its_definition() -> None:
    """Every EMSS trailer and signature packet, rebuilt from the definitions in
    docs/protocol.md with the general encoder and plain hashlib."""
    auth = rmsec.plugins.get_source_auth("emss")(
        rng=seeded_rng(4), options={"every": 8, "offsets": [1, 2, 3], "signature": "ed25519"}
    )
    signer = auth.signer(sender_id=b"snd", now=0.0)
    version, alg, sender_id, public, hash_len, every, offsets = cbor2.loads(signer.params)
    assert (version, alg, sender_id, hash_len, every, offsets) == (2, 1, b"snd", 16, 8, [1, 2, 3])
    hashes: list[bytes] = []
    for n in range(300):  # n crosses the one- and two-byte CBOR integer forms
        packet = b"payload %d" % n
        trailer = signer.protect(packet, 0.0)
        vouch = [hashes[n - o] for o in (1, 2, 3) if n - o >= 0]
        assert trailer == cbor2.dumps([n, vouch])  # canonical: shortest heads
        hashes.append(hashlib.sha256(b"rmsec emss v2\x00" + trailer + packet).digest()[:16])
        for sig in signer.pending(0.0):
            kind, t, signed, signature = cbor2.loads(sig)
            assert (kind, t) == (1, n) and sig == cbor2.dumps([1, t, signed, signature])
            assert signed == [hashes[t + 1 - o] for o in (1, 2, 3) if t + 1 - o >= 0]
            message = b"rmsec emss sig v2\x00" + b"\x03snd" + t.to_bytes(8, "big") + b"".join(signed)
            assert authcrypto.SIGNATURES["ed25519"].load_public_untrusted(public).verify(
                signature, message
            )
    assert signer.signatures == 300 // 8  # type: ignore[attr-defined]


def test_trailers_are_canonical_cbor() -> None:
    """The hand-built trailers are exactly what the general encoder makes of their values."""
    for method in ("groupmac", "ed25519", "tesla", "multimac"):
        options = {"tesla": {"synchronized_clocks": True, "interval": 0.01, "rtt": 0.02}}
        auth = rmsec.plugins.get_source_auth(method)(rng=seeded_rng(2), options=options.get(method, {}))
        signer = auth.signer(sender_id=b"sender", now=0.0)
        for n in range(0, 400, 7):
            trailer = signer.protect(b"p%d" % n, n * 0.003)
            assert trailer == cbor2.dumps(cbor2.loads(trailer)), method
    batch = rmsec.plugins.get_source_auth("batchsig")(rng=seeded_rng(2), options={"batch": 13})
    bsigner = batch.signer(sender_id=b"sender", now=0.0)
    for trailer in bsigner.protect_many([b"p%d" % n for n in range(40)], 0.0):  # type: ignore[attr-defined]
        assert trailer == cbor2.dumps(cbor2.loads(trailer))


def test_expand_is_deterministic_and_label_separated() -> None:
    assert authcrypto.expand(b"s" * 32, b"a", 100) == authcrypto.expand(b"s" * 32, b"a", 100)
    assert authcrypto.expand(b"s" * 32, b"a", 100) != authcrypto.expand(b"s" * 32, b"b", 100)
    assert len(authcrypto.expand(b"s" * 32, b"a", 1000)) == 1000


SANS_IO_FILES = [ROOT / "rmsec/security/authcrypto.py", *sorted((ROOT / "plugins").glob("auth_*/*.py"))]
FORBIDDEN = {"trio", "socket", "time", "random", "asyncio", "secrets"}


@pytest.mark.parametrize("path", SANS_IO_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_auth_code_is_sans_io(path: pathlib.Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module.split(".")[0]]
        else:
            names = []
        assert not FORBIDDEN & set(names), f"{path.name} imports {names}"
        if isinstance(node, ast.Attribute) and node.attr == "urandom":
            raise AssertionError(f"{path.name} calls os.urandom")


#: sha256 of params, material and the first three trailers / auth packets for a fixed seed:
#: pins every encoding (a change here is a wire-format change, bump a version).
KNOWN_ANSWERS = {
    "groupmac": "5bbe65ce7c93174f1673c916b8e57701937591b134dcf5c64c7ea9837ccfa78d",
    "ed25519": "12a2144f23d226cafe1f7dcd9be642d64233535cd73f60e6088d546f1e609297",
    "batchsig": "56e4695a13f9a773ed0c65fc57fea0185557fc1e14cc7be3c2d9f030c279ddc2",
    # v2 (2026-11-28): H_n covers the trailer's bytes instead of n and the joined hashes.
    "emss": "f4204f9a6e6bdc97cc4493dfd537e1e859b5ed464481418b724af61c0532cdc1",
    "tesla": "7fec937d04fb26aa6d00685e47b79089ba399f15126d0e7bee2978da232b362d",
    "multimac": "52e9606a6ac5ca6b7b427bbf4ac864388590e64f4ce86de937cc8e4124a86e76",
}


def transcript(method: str) -> str:
    options = {
        "tesla": {"synchronized_clocks": True, "interval": 0.01, "rtt": 0.02, "chain_length": 64},
        "batchsig": {"batch": 4, "signature": "ed25519"},  # deterministic signatures
        "emss": {"every": 2, "signature": "ed25519"},
    }.get(method, {})
    auth = rmsec.plugins.get_source_auth(method)(rng=seeded_rng(9), options=options)
    signer = auth.signer(sender_id=b"kat-sndr", now=0.0)
    h = hashlib.sha256(signer.params + signer.material_for(b"alice"))
    if method == "batchsig":
        for t in signer.protect_many([b"a", b"b", b"c"], 0.0):  # type: ignore[attr-defined]
            h.update(t)
    else:
        for n in range(3):
            h.update(signer.protect(b"packet %d" % n, n * 0.03))
            for a in signer.pending(n * 0.03):
                h.update(a)
    return h.hexdigest()


DETERMINISTIC = ["groupmac", "ed25519", "batchsig", "emss", "tesla", "multimac"]


@pytest.mark.parametrize("method", DETERMINISTIC)
def test_known_answers(method: str) -> None:
    assert transcript(method) == KNOWN_ANSWERS[method]
