"""Wire formats of ``regions`` (after the common header of ``keymgmt_flat.common``)::

    rekey     [1, 4, 0, epoch, trunk, parts, confirm]
              trunk = AES-KW(trunk key, group key)                    (for the regional managers)
              parts = [[region, inner rekey or b"", AES-KW(region KEK, group key)], ...]
    recovery  [1, 4, 1, epoch, region, inner epoch, inner recovery, AES-KW(region KEK, group key), confirm]
    welcome   [1, 4, 2, epoch, region, inner scheme code, inner welcome, group key]

- ``region`` is the region's index; ``inner`` messages are whole messages of the region's own
  scheme (``flat``, ``lkh`` or ``oft``, their formats unchanged), so a region's members run
  that scheme's member code as is.
- ``region KEK = expand(inner group secret, "rmsec regions kek")``: the key every member of
  the region holds in the region's current inner epoch.
- ``confirm = expand(group key, "rmsec regions confirm", epoch)[:16]``;
- the group secret of epoch ``e`` is ``expand(group key, "rmsec regions group secret", e)``.
- a part is present for every region that has members who were there before this epoch; its
  inner rekey is empty when the region's membership did not change.
"""

from __future__ import annotations

import dataclasses

from rmsec.security import keycrypto
from rmsec.wire.codec import array, byte_string, int_range, record

from ..keymgmt_flat import common

NAME = "regions"
K = keycrypto.KEY_LEN
W = keycrypto.WRAP_LEN
MAX_REGIONS = 4096
INNER_CODES = {"flat": 1, "lkh": 2, "oft": 3}

_region = int_range(0, MAX_REGIONS - 1)
_wrap = byte_string(max_len=W, exact=W)
_inner = byte_string(max_len=common.MAX_MESSAGE)
_part = record(_region, _inner, _wrap)
REKEY_FIELDS = (_wrap, array(_part, max_len=MAX_REGIONS), common.CONFIRM_FIELD)
RECOVERY_FIELDS = (_region, int_range(0, common.MAX_EPOCH), _inner, _wrap, common.CONFIRM_FIELD)
WELCOME_FIELDS = (_region, int_range(1, 3), _inner, byte_string(max_len=K, exact=K))


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


def decode_rekey_untrusted(data: bytes) -> Rekey:
    """A checked rekey (only :class:`~rmsec.errors.MalformedPacket`); nothing opened yet."""
    _, epoch, (trunk, parts, _) = common.decode_untrusted(data, scheme=NAME, kinds={common.REKEY: REKEY_FIELDS})
    return Rekey(epoch, trunk, tuple(Part(*p) for p in parts))
