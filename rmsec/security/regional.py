"""Regional key managers on repair heads: the part of the security layer that is not a scheme's.

A key-management scheme may delegate the last step of a rekey to *regional managers* that run
on repair heads (``regions``: DESIGN.md §2, "they hold no group key unless a key-management
scheme explicitly delegates to them").  The controller's signed rekey then leaves a region's
wrap of the new group key out, and the head that manages the region sends it, re-encrypted
under the region's key, on a transport stream of its own.  This module holds what the core
needs to carry that without knowing the scheme:

- the *translation frame*: how a manager head's output is told apart from protected data on
  the data plane (both arrive as transport messages on some stream).  Protected frames start
  with the frame version byte ``0x01``; a translation frame is the CBOR array
  ``["rmsec translation", 1, payload]`` and so starts with ``0x83 0x71`` then the label;
  ``payload`` is the scheme's bytes (for ``regions``:
  ``[1, 4, 3, epoch, region, AES-KW(region KEK, group key)]``);
- :class:`AwaitingTranslation`: what a scheme's member raises from ``apply`` when the rekey
  is genuine but its region's translation has not arrived yet (the member machine holds the
  rekey instead of asking for recovery at once); :class:`TranslationRejected` when the one
  that arrived was bad;
- the two optional methods a scheme's objects implement to take part
  (:class:`TranslationReceiver` on members, :class:`TranslationSource` on a manager head).

A translation frame carries no signature: the controller's signed rekey holds a key
confirmation of the new group key, and a member believes a translation only if the key it
unwraps matches it.  Anyone on the data plane can send a forged one; it is rejected and the
member falls back to key recovery over its control connection.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from rmsec.errors import MalformedPacket, NotForMe
from rmsec.security.untrusted import loads_array
from rmsec.wire.codec import byte_string, check_fields, dumps, int_range, text

LABEL = "rmsec translation"
VERSION = 1
#: A scheme's translation payload is a few dozen bytes; bound what is parsed.
MAX_PAYLOAD = 1024
PREFIX = dumps([LABEL, VERSION, b""])[: 2 + len(LABEL)]
_FIELDS = (text(max_len=len(LABEL)), int_range(VERSION, VERSION), byte_string(max_len=MAX_PAYLOAD))


class AwaitingTranslation(NotForMe):
    """The rekey is for us but its region's translation has not arrived: hold it."""


class TranslationRejected(AwaitingTranslation):
    """The translation that came does not open to the confirmed key (forged, or stale): it
    was thrown away; hold the rekey for a good one, and count an authentication failure."""


def encode_translation_frame(payload: bytes) -> bytes:
    """A scheme's translation as a data-plane message (what a manager head sends)."""
    return dumps([LABEL, VERSION, payload])


def is_translation_frame(frame: bytes) -> bool:
    """Cheap routing test (nothing checked yet): protected frames never start like this."""
    return frame.startswith(PREFIX)


def decode_translation_frame_untrusted(frame: bytes) -> bytes:
    """The scheme's payload of a translation frame; only :class:`MalformedPacket`."""
    values: list[Any] = loads_array(frame, max_len=MAX_PAYLOAD + 64, what="translation frame")
    label, _, payload = check_fields(values, _FIELDS)
    if label != LABEL:
        raise MalformedPacket("not a translation frame")
    if encode_translation_frame(payload) != frame:  # trailing bytes, non-canonical forms
        raise MalformedPacket("translation frame not in canonical form")
    return bytes(payload)


@runtime_checkable
class TranslationReceiver(Protocol):
    """A scheme's member that takes translations (``regions``)."""

    def accept_translation(self, data: bytes) -> None: ...


@runtime_checkable
class TranslationSource(Protocol):
    """A scheme's member object on a manager head: what it translated since last asked."""

    def translations_to_send(self) -> list[bytes]: ...
