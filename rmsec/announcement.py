"""The session announcement: what a node needs to join a group, as one CBOR blob.

Without security (this module) it is unsigned; the security layer wraps the same encoding in a
signature by the group owner.  The encoding is a CBOR map with small integer keys:

====  ==============================================  =========================================
key   field                                           CBOR
====  ==============================================  =========================================
1     format version (1)                              uint
2     session id                                      bytes (8)
3     root (first sender) address                     [text host, uint port]
4     static head addresses                           array of addresses (at most 64)
5     transport config (TransportConfig fields)       map text -> bool / int / float / text
6     network                                         [text kind, text group / null,
                                                       uint port / null]
====  ==============================================  =========================================

Every key is required and no other is allowed: an announcement is small and written by one
program, so strictness costs nothing and catches confusion early.  Bytes from anywhere but
this process go through :meth:`Announcement.decode_untrusted`, which raises only
:class:`~rmsec.errors.MalformedPacket`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import cbor2

from rmsec.errors import ConfigError, MalformedPacket
from rmsec.io.base import NetworkInfo
from rmsec.transport.config import TransportConfig
from rmsec.wire.codec import parse_single
from rmsec.wire.packets import SESSION_ID_LEN, Addr

FORMAT_VERSION = 1
#: Longest announcement accepted; real ones are a few hundred bytes.
MAX_ANNOUNCEMENT = 16 * 1024
MAX_STATIC_HEADS = 64
NETWORK_KINDS = ("memory", "udp", "ip_multicast")

K_VERSION, K_SESSION, K_ROOT, K_HEADS, K_CONFIG, K_NETWORK = 1, 2, 3, 4, 5, 6
_KEYS = frozenset((K_VERSION, K_SESSION, K_ROOT, K_HEADS, K_CONFIG, K_NETWORK))

#: TransportConfig field -> the Python type its value must have on the wire.
_CONFIG_TYPES: dict[str, type] = {
    f.name: type(f.default) for f in dataclasses.fields(TransportConfig)
}


@dataclasses.dataclass(frozen=True, slots=True)
class Announcement:
    """An unsigned session description (see the module docstring for the encoding)."""

    session: bytes
    root: Addr
    heads: tuple[Addr, ...] = ()
    config: TransportConfig = dataclasses.field(default_factory=TransportConfig)
    network: NetworkInfo = dataclasses.field(default_factory=lambda: NetworkInfo("udp"))

    @property
    def bootstrap(self) -> tuple[Addr, ...]:
        """Where a joining node first looks for the tree: the root, then the static heads."""
        return (self.root, *(h for h in self.heads if h != self.root))

    def to_mapping(self) -> dict[int, Any]:
        net = self.network
        return {
            K_VERSION: FORMAT_VERSION,
            K_SESSION: self.session,
            K_ROOT: [self.root[0], self.root[1]],
            K_HEADS: [[h, p] for h, p in self.heads],
            K_CONFIG: self.config.to_mapping(),
            K_NETWORK: [net.kind, net.group, net.port],
        }

    def encode(self) -> bytes:
        return bytes(cbor2.dumps(self.to_mapping(), canonical=True))

    @classmethod
    def decode_untrusted(cls, data: bytes) -> Announcement:
        """Parse and check every field; any problem raises :class:`MalformedPacket`."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise MalformedPacket("announcement is not bytes")
        if len(data) > MAX_ANNOUNCEMENT:
            raise MalformedPacket(f"announcement of {len(data)} bytes exceeds {MAX_ANNOUNCEMENT}")
        value = parse_single(data, "announcement", major=5)
        return cls.from_mapping_untrusted(value)

    @classmethod
    def from_mapping_untrusted(cls, value: Any) -> Announcement:
        """The checks of :meth:`decode_untrusted` on an already parsed map (for wrappers)."""
        if type(value) is not dict:
            raise MalformedPacket("announcement is not a map")
        keys = set(value)
        if keys != _KEYS:
            raise MalformedPacket("announcement has missing or unknown keys")
        if value[K_VERSION] != FORMAT_VERSION or type(value[K_VERSION]) is not int:
            raise MalformedPacket("unsupported announcement version")
        session = value[K_SESSION]
        if type(session) is not bytes or len(session) != SESSION_ID_LEN:
            raise MalformedPacket(f"session id must be {SESSION_ID_LEN} bytes")
        root = _addr(value[K_ROOT])
        heads = value[K_HEADS]
        if type(heads) is not list or len(heads) > MAX_STATIC_HEADS:
            raise MalformedPacket(f"heads must be a list of at most {MAX_STATIC_HEADS}")
        return cls(
            session=session,
            root=root,
            heads=tuple(_addr(h) for h in heads),
            config=_config(value[K_CONFIG]),
            network=_network(value[K_NETWORK]),
        )


def _addr(value: Any) -> Addr:
    if (
        type(value) is not list
        or len(value) != 2
        or type(value[0]) is not str
        or not 0 < len(value[0]) <= 255
        or type(value[1]) is not int
        or not 0 <= value[1] < 65536
    ):
        raise MalformedPacket("bad address in announcement")
    return (value[0], value[1])


def _config(value: Any) -> TransportConfig:
    if type(value) is not dict or len(value) > len(_CONFIG_TYPES):
        raise MalformedPacket("transport config must be a map of known options")
    checked: dict[str, Any] = {}
    for key, item in value.items():
        expected = _CONFIG_TYPES.get(key) if type(key) is str else None
        if expected is None:
            raise MalformedPacket("unknown transport option in announcement")
        if expected is float and type(item) is int:
            item = float(item)
        if type(item) is not expected:
            raise MalformedPacket(f"transport option {key} has the wrong type")
        if isinstance(item, float) and not math.isfinite(item):
            raise MalformedPacket(f"transport option {key} is not finite")
        if isinstance(item, str) and len(item) > 64:
            raise MalformedPacket(f"transport option {key} is too long")
        checked[key] = item
    try:
        return TransportConfig.from_mapping(checked)
    except (ConfigError, TypeError, ValueError):
        raise MalformedPacket("transport config in announcement is invalid") from None


def _network(value: Any) -> NetworkInfo:
    if type(value) is not list or len(value) != 3 or value[0] not in NETWORK_KINDS:
        raise MalformedPacket("bad network description in announcement")
    kind, group, port = value
    if kind == "ip_multicast":
        if type(group) is not str or not 0 < len(group) <= 64:
            raise MalformedPacket("ip_multicast needs a group address")
        if type(port) is not int or not 0 < port < 65536:
            raise MalformedPacket("ip_multicast needs a port")
        return NetworkInfo("ip_multicast", group, port)
    if group is not None or port is not None:
        raise MalformedPacket(f"network {kind} takes no group or port")
    return NetworkInfo(kind)


def announcement_from(value: bytes | Announcement | Mapping[int, Any]) -> Announcement:
    """Accept what the public API is given: encoded bytes (untrusted) or an object."""
    if isinstance(value, Announcement):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Announcement.decode_untrusted(bytes(value))
    return Announcement.from_mapping_untrusted(dict(value))
