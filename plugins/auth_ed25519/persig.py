"""A signature on every packet: the simplest source authentication, and the baseline.

Each trailer is one signature over the packet, so every packet verifies on its own whatever
else was lost, at the full cost of one public-key operation per packet on both sides.

Encodings (CBOR arrays, decoded strictly as untrusted input):

- params:  ``[1, alg, sender_id, public_key]`` with ``alg`` 1 = Ed25519 (32-byte key),
  2 = ECDSA P-256 (33-byte compressed point);
- material: empty (nothing per receiver);
- trailer: ``[signature]``, 64 bytes (ECDSA as raw ``r || s``).

The signed string is ``"rmsec persig v1\\0" || len(sender_id) || sender_id || packet``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from rmsec.errors import AuthenticationFailed, ConfigError, MalformedPacket
from rmsec.interfaces import Rng, Signer, SourceAuth, Verified, Verifier
from rmsec.security import authcrypto
from rmsec.wire.codec import byte_string, check_fields, dumps, loads_untrusted, uint

PARAMS_VERSION = 1
DOMAIN = b"rmsec persig v1\x00"
MAX_SENDER_ID = 64

_sender_id = byte_string(max_len=MAX_SENDER_ID)


def check_sender_id(sender_id: bytes) -> bytes:
    """Sender ids are short byte strings (node ids): refuse anything else early."""
    if not isinstance(sender_id, bytes) or not 1 <= len(sender_id) <= MAX_SENDER_ID:
        raise ConfigError(f"sender_id must be 1..{MAX_SENDER_ID} bytes")
    return sender_id


def check_options(options: Mapping[str, Any], known: set[str]) -> None:
    """Refuse misspelled options rather than silently ignoring them."""
    unknown = set(options) - known
    if unknown:
        raise ConfigError(f"unknown option(s) {sorted(unknown)}; known: {sorted(known)}")


# Canonical CBOR heads for the fixed trailer layouts of the auth plugins.  cbor2.dumps costs
# ~0.7 µs per trailer, as much as the MAC it carries; these build the identical bytes (the
# known-answer tests in tests/unit/test_auth_crypto.py hold them to codec.dumps) in ~0.15 µs.


_TINY = [bytes((v,)) for v in range(24)]


def cbor_uint(value: int) -> bytes:
    """Canonical CBOR unsigned integer (major type 0, shortest form).  One call, no
    helper: it runs for every EMSS trailer."""
    if value < 24:
        return _TINY[value]
    if value < 0x100:
        return bytes((24, value))
    if value < 0x10000:
        return b"\x19" + value.to_bytes(2, "big")
    if value < 0x100000000:
        return b"\x1a" + value.to_bytes(4, "big")
    return b"\x1b" + value.to_bytes(8, "big")


def cbor_bytes_head(length: int) -> bytes:
    """Canonical CBOR byte-string head (major type 2) for ``length`` bytes."""
    return _head(0x40, length)


def cbor_array_head(length: int) -> bytes:
    """Canonical CBOR array head (major type 4) for ``length`` items."""
    return _head(0x80, length)


def _head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes((major | value,))
    if value < 0x100:
        return bytes((major | 24, value))
    if value < 0x10000:
        return bytes((major | 25,)) + value.to_bytes(2, "big")
    if value < 0x100000000:
        return bytes((major | 26,)) + value.to_bytes(4, "big")
    return bytes((major | 27,)) + value.to_bytes(8, "big")


def read_uint(buf: bytes, pos: int) -> tuple[int, int]:
    """A CBOR unsigned integer at ``pos``: ``(value, next position)``; ``(-1, pos)`` if the
    byte there is no unsigned integer.  For fast paths; IndexError on truncation."""
    b = buf[pos]
    if b < 24:
        return b, pos + 1
    if b == 24:
        return buf[pos + 1], pos + 2
    if 25 <= b <= 27:
        end = pos + 1 + (2, 4, 8)[b - 25]
        if end > len(buf):
            raise IndexError(end)
        return int.from_bytes(buf[pos + 1 : end], "big"), end
    return -1, pos


def cbor_bstr(value: bytes) -> bytes:
    """Canonical CBOR byte string."""
    return _head(0x40, len(value)) + value


def int_option(options: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    """An integer option in ``[low, high]``; :class:`ConfigError` naming it otherwise."""
    value = options.get(name, default)
    if type(value) is not int or not low <= value <= high:
        raise ConfigError(f"option {name} must be an integer in [{low}, {high}], got {value!r}")
    return value


def float_option(
    options: Mapping[str, Any], name: str, default: float, low: float, high: float
) -> float:
    """A number option in ``[low, high]`` (ints accepted); :class:`ConfigError` otherwise."""
    value = options.get(name, default)
    if type(value) not in (int, float) or not low <= value <= high:
        raise ConfigError(f"option {name} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def bad_algorithm() -> authcrypto.SignatureAlgorithm:
    """For ``SIGNATURES_BY_CODE.get(code) or bad_algorithm()`` on untrusted codes."""
    raise MalformedPacket("unknown signature algorithm")


class SignatureSigner(Signer):
    def __init__(
        self, alg: authcrypto.SignatureAlgorithm, key: authcrypto.SigningKey, sender_id: bytes
    ) -> None:
        self._key = key
        self._prefix = authcrypto.signed_message(DOMAIN, sender_id)
        self._params = dumps(
            [PARAMS_VERSION, alg.code, sender_id, key.verifying_key().public_bytes()]
        )
        self._head = cbor_array_head(1) + cbor_bytes_head(alg.signature_len)

    @property
    def params(self) -> bytes:
        return self._params

    def protect(self, packet: bytes, now: float) -> bytes:
        return self._head + self._key.sign(self._prefix + packet)


class SignatureVerifier(Verifier):
    def __init__(self, alg: authcrypto.SignatureAlgorithm, params: bytes, material: bytes) -> None:
        version, code, sender_id, public = check_fields(
            loads_untrusted(params),
            (uint(8), uint(8), _sender_id, byte_string(max_len=alg.public_len)),
        )
        if version != PARAMS_VERSION or code != alg.code or not sender_id:
            raise MalformedPacket("params are not for this method")
        if material:
            raise MalformedPacket("this method takes no per-receiver material")
        self._key = alg.load_public_untrusted(public)
        self._prefix = authcrypto.signed_message(DOMAIN, sender_id)
        self._sig = byte_string(max_len=alg.signature_len, exact=alg.signature_len)
        self._head = cbor_array_head(1) + cbor_bytes_head(alg.signature_len)
        self._trailer_len = len(self._head) + alg.signature_len

    def verify(self, packet: bytes, trailer: bytes, now: float) -> list[Verified]:
        if len(trailer) == self._trailer_len and trailer.startswith(self._head):
            signature = trailer[len(self._head) :]  # the canonical encoding: skip the parser
        else:
            (signature,) = check_fields(loads_untrusted(trailer), (self._sig,))
        if not self._key.verify(signature, self._prefix + packet):
            raise AuthenticationFailed("bad source signature")
        return [Verified(packet, trailer)]


class PerPacketSignatureAuth(SourceAuth):
    """Base of ``ed25519`` and ``ecdsa-p256``: subclasses name the algorithm."""

    algorithm: ClassVar[str]
    non_repudiable = True

    def __init__(self, *, rng: Rng, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(rng=rng, options=options)
        check_options(self.options, set())
        self._alg = authcrypto.signature_algorithm(self.algorithm)

    def signer(self, *, sender_id: bytes, now: float) -> Signer:
        return SignatureSigner(self._alg, self._alg.generate(self.rng), check_sender_id(sender_id))

    def verifier(self, params: bytes, material: bytes, *, now: float) -> Verifier:
        return SignatureVerifier(self._alg, params, material)
