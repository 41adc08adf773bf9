"""Source authentication ``batchsig``: one signature over the Merkle root of a batch.

The sender gathers up to ``batch`` packets (or whatever arrived within ``deadline`` seconds),
builds the RFC 9162 Merkle tree over them, signs the root once, and gives every packet a
trailer carrying the signature and its own inclusion path (Wong and Lam's tree chaining).  So
each packet verifies on its own whatever else is lost, and a receiver pays one signature
verification per batch: the first packet of a batch to arrive verifies the signature and the
root is cached; every later packet of that batch costs ``1 + log2(batch)`` short hashes.

Because a trailer depends on packets not yet sent, the signer is a
:class:`~rmsec.interfaces.DeferredSigner`: the core (``StreamProtector.submit``) submits
packets, collects ``(packet, trailer)`` pairs from ``ready`` and wakes at ``get_timer``, so a
batch is closed by size or by ``deadline`` (latency stays bounded) and a stream pays one
signature per batch.  ``protect`` still works and signs a batch of one (per-packet signature
cost) for callers that cannot wait.

Encodings (CBOR, strict):

- params:  ``[1, alg, sender_id, public_key, hash_len]``;
- material: empty;
- trailer: ``[batch_id u64, index u16, count u16, path [hash_len bytes ...], signature]``
  with ``len(path)`` exactly the RFC 9162 inclusion-path length of ``index`` in ``count``;
- signed string: ``"rmsec batchsig v1\\0" || len(sender_id) || sender_id || batch_id (8 B) ||
  count (2 B) || root``;  leaf ``= SHA-256(0x00 || packet)[:hash_len]``, node
  ``= SHA-256(0x01 || left || right)[:hash_len]``.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from typing import Any

from rmsec.errors import AuthenticationFailed, MalformedPacket
from rmsec.hookspecs import hookimpl
from rmsec.interfaces import DeferredSigner, Rng, SourceAuth, Verified, Verifier
from rmsec.registry import SourceAuthRegistry
from rmsec.security import authcrypto
from rmsec.wire.codec import byte_string, check_fields, dumps, int_range, loads_untrusted, uint

from ..auth_ed25519.persig import (
    bad_algorithm,
    cbor_array_head,
    cbor_bstr,
    cbor_bytes_head,
    cbor_uint,
    check_options,
    check_sender_id,
    float_option,
    int_option,
    read_uint,
)

VERSION = 1
#: Receivers verify one signature per batch / per ``every`` packets: the algorithm that
#: verifies fastest on this OpenSSL (P-256 ~43 µs, Ed25519 ~60 µs; docs/bench-auth.md).
DEFAULT_SIGNATURE = "ecdsa-p256"
DOMAIN = b"rmsec batchsig v1\x00"
MAX_BATCH = 1024
MAX_PATH = 10  # ceil(log2(MAX_BATCH))
_U64 = (1 << 64) - 1


class BatchSigner(DeferredSigner):
    """Sender side; deferred: ``submit`` / ``ready`` / ``get_timer`` (see module doc)."""

    def __init__(
        self,
        alg: authcrypto.SignatureAlgorithm,
        key: authcrypto.SigningKey,
        sender_id: bytes,
        *,
        batch: int,
        deadline: float,
        hash_len: int,
    ) -> None:
        self._key = key
        self._prefix = authcrypto.signed_message(DOMAIN, sender_id)
        self._params = dumps(
            [VERSION, alg.code, sender_id, key.verifying_key().public_bytes(), hash_len]
        )
        self.batch = batch
        self.deadline = deadline
        self.hash_len = hash_len
        self._next_batch = 0
        self._open: list[bytes] = []
        self._opened_at = 0.0
        self._ready: list[tuple[bytes, bytes]] = []
        self._hash_head = cbor_bytes_head(hash_len)
        self.batches_signed = 0

    @property
    def params(self) -> bytes:
        return self._params

    # -- immediate API (the interface) -------------------------------------------------

    def protect(self, packet: bytes, now: float) -> bytes:
        """A batch of one: correct but as costly as a per-packet signature."""
        return self.protect_many([packet], now)[0]

    def protect_many(self, packets: Sequence[bytes], now: float) -> list[bytes]:
        """Trailers for ``packets``, signed as consecutive batches of at most ``batch``."""
        out: list[bytes] = []
        for start in range(0, len(packets), self.batch):
            out.extend(self._sign(packets[start : start + self.batch]))
        return out

    # -- deferred API ------------------------------------------------------------------

    def submit(self, packet: bytes, now: float) -> None:
        """Add ``packet`` to the open batch; a full batch is signed at once."""
        if not self._open:
            self._opened_at = now
        self._open.append(packet)
        if len(self._open) >= self.batch:
            self._close()

    def ready(self, now: float) -> list[tuple[bytes, bytes]]:
        """Every ``(packet, trailer)`` signed so far, closing the open batch if it is due."""
        if self._open and now >= self._opened_at + self.deadline:
            self._close()
        out, self._ready = self._ready, []
        return out

    def flush(self, now: float) -> list[tuple[bytes, bytes]]:
        """Close the open batch now (end of stream) and return everything signed."""
        if self._open:
            self._close()
        return self.ready(now)

    def get_timer(self) -> float | None:
        """When the open batch must be closed, or ``None`` when none is open."""
        return self._opened_at + self.deadline if self._open else None

    def _close(self) -> None:
        packets, self._open = self._open, []
        self._ready.extend(zip(packets, self._sign(packets), strict=True))

    def _sign(self, packets: Sequence[bytes]) -> list[bytes]:
        batch_id = self._next_batch
        self._next_batch += 1
        self.batches_signed += 1
        tree = authcrypto.MerkleBatch(
            [authcrypto.merkle_leaf(p, self.hash_len) for p in packets], self.hash_len
        )
        count = len(packets)
        signature = self._key.sign(
            self._prefix + authcrypto.u64(batch_id) + count.to_bytes(2, "big") + tree.root
        )
        # Canonical CBOR [batch_id, index, count, [node, ...], signature], built by hand
        # (see persig): the shared head and tail once per batch.
        head = cbor_array_head(5) + cbor_uint(batch_id)
        middle = cbor_uint(count)
        tail = cbor_bstr(signature)
        hh = self._hash_head
        return [
            head + cbor_uint(index) + middle + cbor_array_head(len(path)) + hh + hh.join(path) + tail
            if path
            else head + cbor_uint(index) + middle + b"\x80" + tail
            for index, path in enumerate(tree.paths)
        ]


class BatchVerifier(Verifier):
    """Receiver side: verifies each packet alone; caches the roots it has verified."""

    def __init__(self, params: bytes, material: bytes, cache: int) -> None:
        version, code, sender_id, public, hash_len = check_fields(
            loads_untrusted(params),
            (uint(8), uint(8), byte_string(max_len=64), byte_string(max_len=64), int_range(16, 32)),
        )
        if version != VERSION or not sender_id or material:
            raise MalformedPacket("params are not for batchsig v1")
        alg = authcrypto.SIGNATURES_BY_CODE.get(code) or bad_algorithm()
        self._key = alg.load_public_untrusted(public)
        self._sig_len = alg.signature_len
        self._sig_head = cbor_bytes_head(alg.signature_len)
        self._prefix = authcrypto.signed_message(DOMAIN, sender_id)
        self._hash_len = hash_len
        self._hash_head = cbor_bytes_head(hash_len)
        self._head0, self._head1 = self._hash_head[:1], self._hash_head[1:]
        self._step = len(self._hash_head) + hash_len
        self._sig_part = len(self._sig_head) + alg.signature_len
        #: verified batches (oldest first): signed leaf count and every node known authentic
        self._batches: collections.OrderedDict[int, tuple[int, set[bytes]]] = (
            collections.OrderedDict()
        )
        self._cache = cache
        self.signatures_verified = 0

    def verify(self, packet: bytes, trailer: bytes, now: float) -> list[Verified]:
        parsed = self._parse_canonical(trailer)
        if parsed is None:
            parsed = self._decode_untrusted(trailer)
        batch_id, index, count, packed, signature = parsed
        size, step = self._hash_len, self._step
        leaf = authcrypto.merkle_leaf(packet, size)
        known = self._batches.get(batch_id)
        if known is not None:
            # A later packet of a verified batch: hash up to the first node already known to
            # be authentic (usually none or one hash: a sibling's path holds this leaf or
            # its parent); a forgery naming a known batch costs hashing only, never a
            # signature verification.
            signed_count, nodes = known
            if count != signed_count:
                raise AuthenticationFailed("packet not in its batch")
            if leaf in nodes:
                return [Verified(packet, trailer)]
            climbed = authcrypto.merkle_climb_packed(leaf, index, count, packed, step, size, nodes)
            if climbed is None or climbed[-1] not in nodes:
                raise AuthenticationFailed("packet not in its batch")
            nodes.update(climbed)
            skip = step - size
            nodes.update(packed[k + skip : k + step] for k in range(0, (len(climbed) - 1) * step, step))
            return [Verified(packet, trailer)]
        climbed = authcrypto.merkle_climb_packed(leaf, index, count, packed, step, size)
        if climbed is None:
            raise AuthenticationFailed("bad inclusion path")
        self.signatures_verified += 1
        root = climbed[-1]
        message = self._prefix + authcrypto.u64(batch_id) + count.to_bytes(2, "big") + root
        if not self._key.verify(signature, message):
            raise AuthenticationFailed("bad batch signature")
        skip = step - size
        path = [packed[k + skip : k + step] for k in range(0, len(packed), step)]
        self._batches[batch_id] = (count, {*climbed, *path})
        if len(self._batches) > self._cache:
            self._batches.popitem(last=False)
        return [Verified(packet, trailer)]

    def _parse_canonical(self, trailer: bytes) -> tuple[int, int, int, bytes, bytes] | None:
        """Fast path for the signer's own encoding: ``(batch_id, index, count, the path's
        encoded nodes, signature)``; ``None`` defers to the general decoder (which accepts
        the same values in any CBOR encoding, only slower)."""
        try:
            if trailer[0] != 0x85:
                return None
            batch_id, pos = read_uint(trailer, 1)
            if batch_id < 0:
                return None
            # index and count are below 2**16: one, two or three bytes
            b = trailer[pos]
            if b < 24:
                index, pos = b, pos + 1
            elif b == 24:
                index, pos = trailer[pos + 1], pos + 2
            elif b == 25:
                index, pos = (trailer[pos + 1] << 8) | trailer[pos + 2], pos + 3
            else:
                return None
            b = trailer[pos]
            if b < 24:
                count, pos = b, pos + 1
            elif b == 24:
                count, pos = trailer[pos + 1], pos + 2
            elif b == 25:
                count, pos = (trailer[pos + 1] << 8) | trailer[pos + 2], pos + 3
            else:
                return None
            if not index < count <= MAX_BATCH:
                return None
            length = trailer[pos] - 0x80
            if length != authcrypto.merkle_path_length(index, count):
                return None
            start = pos + 1
            end = start + length * self._step
            if len(trailer) != end + self._sig_part or not trailer.startswith(self._sig_head, end):
                return None
            packed = trailer[start:end]
            if packed[:: self._step] != self._head0 * length or (
                self._head1 and packed[1 :: self._step] != self._head1 * length
            ):
                return None
            return batch_id, index, count, packed, trailer[end + len(self._sig_head) :]
        except IndexError:
            return None

    def _decode_untrusted(self, trailer: bytes) -> tuple[int, int, int, bytes, bytes]:
        fields = loads_untrusted(trailer)
        if len(fields) != 5:
            raise MalformedPacket("batchsig trailer has 5 fields")
        batch_id, index, count, path, signature = fields
        if (
            type(batch_id) is not int
            or type(index) is not int
            or type(count) is not int
            or type(path) is not list
            or type(signature) is not bytes
            or not 0 <= batch_id <= _U64
            or not 0 <= index < count <= MAX_BATCH
            or len(signature) != self._sig_len
            or len(path) != authcrypto.merkle_path_length(index, count)
        ):
            raise MalformedPacket("bad batchsig trailer")
        for node in path:
            if type(node) is not bytes or len(node) != self._hash_len:
                raise MalformedPacket("bad batchsig path node")
        # The fast path's shape: nodes laid out as in a canonical trailer.
        packed = b"".join(self._hash_head + node for node in path)
        return batch_id, index, count, packed, signature


class BatchSigAuth(SourceAuth):
    """Merkle-tree batch signatures (options: batch, deadline, hash_len, signature, cache)."""

    name = "batchsig"
    non_repudiable = True

    def __init__(self, *, rng: Rng, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(rng=rng, options=options)
        check_options(self.options, {"batch", "deadline", "hash_len", "signature", "cache"})
        o = self.options
        self.batch = int_option(o, "batch", 64, 1, MAX_BATCH)
        self.hash_len = int_option(o, "hash_len", 16, 16, 32)
        self.cache = int_option(o, "cache", 256, 1, 1 << 16)
        self.deadline = float_option(o, "deadline", 0.02, 0.0, 60.0)
        self.alg = authcrypto.signature_algorithm(o.get("signature", DEFAULT_SIGNATURE))

    def signer(self, *, sender_id: bytes, now: float) -> BatchSigner:
        return BatchSigner(
            self.alg,
            self.alg.generate(self.rng),
            check_sender_id(sender_id),
            batch=self.batch,
            deadline=self.deadline,
            hash_len=self.hash_len,
        )

    def verifier(self, params: bytes, material: bytes, *, now: float) -> BatchVerifier:
        return BatchVerifier(params, material, self.cache)


@hookimpl
def rmsec_register_source_auth(registry: SourceAuthRegistry) -> None:
    registry.add(BatchSigAuth)
