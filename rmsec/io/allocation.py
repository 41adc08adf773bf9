"""The I/O side of multicast address allocation (DESIGN.md §4): which ``(group, port)`` a
controller's group uses on the IP multicast network.

:mod:`rmsec.security.addresses` decides (sans-IO); this module gives it what only I/O can know
and keeps one allocator per configured range for the whole process, so two controllers in one
process never share an address:

- groups some socket on this host (or network namespace) has joined, from ``/proc/net/igmp``,
  are skipped when allocating: another application, or another controller's members, use
  them;
- the address is held while the controller runs and released when it stops
  (:meth:`Allocation.release`).

The controller then opens its network on the allocated address, so the transport
announcement (and hence the signed one) names it and every member, head and sender that
opens from the announcement joins that group.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import pathlib
import sys

from rmsec.config import GroupConfig
from rmsec.io.multicast import IpMulticastNetwork
from rmsec.security.addresses import Addr, MulticastAllocator

IGMP_TABLE = pathlib.Path("/proc/net/igmp")

_ALLOCATORS: dict[tuple[str, tuple[int, int]], MulticastAllocator] = {}


def parse_igmp_table(text: str, byteorder: str = sys.byteorder) -> set[str]:
    """IPv4 groups joined on any interface, from the text of ``/proc/net/igmp`` (the kernel
    prints each group as the hex of its in-memory 32-bit value, so byte order matters)."""
    groups: set[str] = set()
    for line in text.splitlines():
        fields = line.split()
        # Group lines are indented and start with 8 hex digits; interface lines with an index.
        if not line[:1].isspace() or not fields or len(fields[0]) != 8:
            continue
        try:
            raw = bytes.fromhex(fields[0])
        except ValueError:
            continue
        value = int.from_bytes(raw[::-1] if byteorder == "little" else raw, "big")
        groups.add(str(ipaddress.IPv4Address(value)))
    return groups


def groups_joined_here(path: pathlib.Path = IGMP_TABLE) -> set[str]:
    """Groups joined in this network namespace; empty where the table cannot be read."""
    try:
        return parse_igmp_table(path.read_text(encoding="ascii", errors="replace"))
    except OSError:
        return set()


@dataclasses.dataclass(slots=True)
class Allocation:
    """One group's address, held until :meth:`release`."""

    address: Addr
    network: IpMulticastNetwork
    _allocator: MulticastAllocator
    _key: str
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._allocator.release(self._key)


def allocate_network(
    config: GroupConfig, network: IpMulticastNetwork, *, joined: set[str] | None = None
) -> Allocation:
    """Allocate ``config.group`` an address from ``config.multicast_range`` /
    ``multicast_ports`` and return ``network`` moved onto it (same interface, loss, seed).

    ``joined`` overrides the groups read from ``/proc/net/igmp`` (for tests).
    """
    key = (config.multicast_range, config.multicast_ports)
    allocator = _ALLOCATORS.get(key)
    if allocator is None:
        allocator = _ALLOCATORS[key] = MulticastAllocator(*key)
    allocator.note_joined(groups_joined_here() if joined is None else joined)
    name, n = config.group, 1
    held = allocator.allocated()
    while name in held:  # the same group run twice in one process: keep them apart
        n += 1
        name = f"{config.group}\0{n}"
    address = allocator.allocate(name)
    moved = IpMulticastNetwork(
        group=address[0], port=address[1], interface=network.interface, loss=network.loss,
        seed=network.seed,
    )
    return Allocation(address, moved, allocator, name)
