"""Wire formats of ``regions`` (after the common header of ``keymgmt_flat.common``)::

    rekey     [1, 4, 0, epoch, trunk, parts, confirm]
              trunk = AES-KW(trunk key, group key)                    (for the regional managers)
              parts = [[region, inner rekey or b"", AES-KW(region KEK, group key)], ...]
    recovery  [1, 4, 1, epoch, region, inner epoch, inner recovery, AES-KW(region KEK, group key), confirm]
    welcome   [1, 4, 2, epoch, region, inner scheme code, inner welcome, group key]
    translation    [1, 4, 3, epoch, region, AES-KW(region KEK, group key)]   (manager head -> its region)
    manager state  [1, 4, 4, epoch, region, inner scheme code, seat welcome, seat recovery or b"",
                    trunk welcome, trunk recovery or b"", group key]       (controller -> manager head, TLS)

- ``region`` is the region's index; ``inner`` messages are whole messages of the region's own
  scheme (``flat``, ``lkh`` or ``oft``, their formats unchanged), so a region's members run
  that scheme's member code as is.
- ``region KEK = expand(inner group secret, "rmsec regions kek")``: the key every member of
  the region holds in the region's current inner epoch.
- ``confirm = expand(group key, "rmsec regions confirm", epoch)[:16]``;
- the group secret of epoch ``e`` is ``expand(group key, "rmsec regions group secret", e)``.
- a part is present for every region that has members who were there before this epoch; its
  inner rekey is empty when the region's membership did not change.  Its wrap is empty when the
  region's manager runs on a repair head (a *remote* region): that head sends the wrap as a
  *translation* on its own stream, and the region's members take it from there.
- kinds 3 and 4 exist only in ``regions`` (the common header of ``keymgmt_flat`` stops at 2), so
  they are decoded here by :func:`decode_untrusted`.  A manager state is a regional manager's
  whole key material: the region's *seat* (a member of the region's inner scheme that only the
  manager holds: its welcome and a recovery bringing it to the current inner epoch), the
  manager's trunk membership (a ``flat`` welcome and recovery) and the group key.  It travels
  only inside TLS (the head's welcome, or a key recovery over its control connection).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from rmsec.errors import MalformedPacket
from rmsec.security import keycrypto
from rmsec.security.untrusted import loads_array
from rmsec.wire.codec import Check, array, byte_string, check_fields, int_range, record, uint

from ..keymgmt_flat import common

NAME = "regions"
K = keycrypto.KEY_LEN
W = keycrypto.WRAP_LEN
MAX_REGIONS = 4096
INNER_CODES = {"flat": 1, "lkh": 2, "oft": 3}

_region = int_range(0, MAX_REGIONS - 1)
_wrap = byte_string(max_len=W, exact=W)
_inner = byte_string(max_len=common.MAX_MESSAGE)
TRANSLATION, MANAGER = 3, 4
KINDS = {**common.KINDS, TRANSLATION: "translation", MANAGER: "manager state"}


def _wrap_or_empty(value: Any) -> bytes:
    """A part's wrap: 24 bytes, or empty when the region's manager head sends it."""
    if type(value) is not bytes or len(value) not in (0, W):
        raise MalformedPacket("a part's wrap is 24 bytes or empty")
    return value


_part = record(_region, _inner, _wrap_or_empty)
_code = int_range(1, 3)
_key = byte_string(max_len=K, exact=K)
REKEY_FIELDS = (_wrap, array(_part, max_len=MAX_REGIONS), common.CONFIRM_FIELD)
RECOVERY_FIELDS = (_region, int_range(0, common.MAX_EPOCH), _inner, _wrap, common.CONFIRM_FIELD)
WELCOME_FIELDS = (_region, _code, _inner, _key)
TRANSLATION_FIELDS = (_region, _wrap)
MANAGER_FIELDS = (_region, _code, _inner, _inner, _inner, _inner, _key)
_HEADER = (uint(8), int_range(1, 4), int_range(0, MANAGER), int_range(0, common.MAX_EPOCH))


def region_kek(inner_secret: bytes) -> bytes:
    return keycrypto.expand(inner_secret, b"rmsec regions kek")


@dataclasses.dataclass(frozen=True, slots=True)
class Part:
    region: int
    inner: bytes
    wrap: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Rekey:
    epoch: int
    trunk: bytes
    parts: tuple[Part, ...]


def decode_untrusted(
    data: bytes, kinds: Mapping[int, Sequence[Check]], *, max_len: int = common.MAX_MESSAGE
) -> tuple[int, int, list[Any]]:
    """``(kind, epoch, checked fields)`` of a ``regions`` message of one of ``kinds`` (the
    common ones and the two of this scheme); only :class:`MalformedPacket`."""
    values = loads_array(data, max_len=max_len, what="regions message")
    if len(values) < len(_HEADER):
        raise MalformedPacket("regions message too short")
    version, code, kind, epoch = check_fields(values[: len(_HEADER)], _HEADER)
    if version != common.VERSION or code != common.SCHEMES[NAME]:
        raise MalformedPacket("not a regions message")
    if kind not in kinds:
        raise MalformedPacket(f"a {KINDS[kind]} is not accepted here")
    return kind, epoch, check_fields(values[len(_HEADER) :], kinds[kind])


def encode_translation(epoch: int, region: int, wrap: bytes) -> bytes:
    return common.encode(NAME, TRANSLATION, epoch, region, wrap)


@dataclasses.dataclass(frozen=True, slots=True)
class Translation:
    epoch: int
    region: int
    wrap: bytes


def decode_translation_untrusted(data: bytes) -> Translation:
    """A manager head's translation, checked (only :class:`MalformedPacket`); nothing opened.

    Anyone on the data plane can send one, so it must also be exactly the canonical encoding
    (the CBOR parser stops after one item and would ignore trailing bytes)."""
    _, epoch, (region, wrap) = decode_untrusted(data, {TRANSLATION: TRANSLATION_FIELDS}, max_len=256)
    if encode_translation(epoch, region, wrap) != data:
        raise MalformedPacket("translation not in canonical form")
    return Translation(epoch, region, wrap)


def decode_rekey_untrusted(data: bytes) -> Rekey:
    """A checked rekey (only :class:`~rmsec.errors.MalformedPacket`); nothing opened yet."""
    _, epoch, (trunk, parts, _) = common.decode_untrusted(data, scheme=NAME, kinds={common.REKEY: REKEY_FIELDS})
    return Rekey(epoch, trunk, tuple(Part(*p) for p in parts))
