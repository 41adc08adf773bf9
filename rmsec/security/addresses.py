"""Multicast address allocation from an administratively scoped range (RFC 2365).

For the IP multicast network the controller hands each group an address and port from a
configured range (``239.0.0.0/8`` by default) and never one in use: neither one it allocated
and has not released, nor one the caller reserved because something else on the network uses
it.  The first candidate is derived from the group name (so a restarted controller tends to
pick the same address, which keeps stale listeners from a previous run on their group),
then the range is probed in a fixed pseudo-random order from there.

Sans-IO: no sockets are opened here; probing for other users of an address is the caller's.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable

from rmsec.errors import ConfigError, LocalError

DEFAULT_RANGE = "239.0.0.0/8"
DEFAULT_PORTS = (40000, 49999)
#: Pseudo-random probes before the linear scan.
RANDOM_PROBES = 64

Addr = tuple[str, int]


class MulticastAllocator:
    """Allocate ``(group address, port)`` pairs for groups, uniquely."""

    def __init__(self, network: str = DEFAULT_RANGE, ports: tuple[int, int] = DEFAULT_PORTS) -> None:
        try:
            self.network = ipaddress.IPv4Network(network)
        except ValueError as exc:
            raise ConfigError(f"multicast range {network!r} is not an IPv4 network: {exc}") from None
        if not self.network.is_multicast:
            raise ConfigError(f"multicast range {network} is not within 224.0.0.0/4")
        if not self.network.subnet_of(ipaddress.IPv4Network("239.0.0.0/8")):
            raise ConfigError(
                f"multicast range {network} is not administratively scoped (inside 239.0.0.0/8)"
            )
        low, high = ports
        if not 1024 <= low <= high <= 65535:
            raise ConfigError(f"multicast ports {ports} must be a range within 1024..65535")
        self.ports = (low, high)
        self._by_group: dict[str, Addr] = {}
        self._in_use: set[Addr] = set()
        self._hosts_in_use: set[str] = set()
        self._reserved: set[Addr] = set()
        self._reserved_hosts: set[str] = set()
        self._joined: set[str] = set()

    def _pick(self, group: str, attempt: int) -> Addr:
        digest = hashlib.sha256(b"rmsec mcast v1\x00" + group.encode() + attempt.to_bytes(4, "big")).digest()
        size = self.network.num_addresses
        if size > 2:  # skip the range's first and last address (x.0 / x.255-style)
            offset = 1 + int.from_bytes(digest[:8], "big") % (size - 2)
        else:
            offset = int.from_bytes(digest[:8], "big") % size
        address = str(self.network.network_address + offset)
        span = self.ports[1] - self.ports[0] + 1
        port = self.ports[0] + int.from_bytes(digest[8:12], "big") % span
        return (address, port)

    def _free(self, candidate: Addr) -> bool:
        # One group per address, whatever the port: hosts join by address, so sharing one
        # would deliver every group's traffic to both groups' receivers.
        return (
            candidate[0] not in self._reserved_hosts
            and candidate[0] not in self._joined
            and candidate[0] not in self._hosts_in_use
            and candidate not in self._reserved
        )

    def allocate(self, group: str) -> Addr:
        """The group's address (the same one again while it holds it).

        A few pseudo-random probes first (spreads groups, stable per name), then a linear scan
        of the whole range, so allocation fails only when no address is free.
        """
        if group in self._by_group:
            return self._by_group[group]
        candidate = self._pick(group, 0)
        for attempt in range(1, RANDOM_PROBES):
            if self._free(candidate):
                return self._take(group, candidate)
            candidate = self._pick(group, attempt)
        first = int(ipaddress.IPv4Address(candidate[0])) - int(self.network.network_address)
        size = self.network.num_addresses
        usable = range(1, size - 1) if size > 2 else range(size)
        for step in range(len(usable)):
            offset = usable[(first - usable.start + step) % len(usable)]
            address = str(self.network.network_address + offset)
            if self._free((address, candidate[1])):
                return self._take(group, (address, candidate[1]))
        raise LocalError(f"no free multicast address in {self.network} for group {group!r}")

    def _take(self, group: str, candidate: Addr) -> Addr:
        self._in_use.add(candidate)
        self._hosts_in_use.add(candidate[0])
        self._by_group[group] = candidate
        return candidate

    def release(self, group: str) -> None:
        addr = self._by_group.pop(group, None)
        if addr is not None:
            self._in_use.discard(addr)
            self._hosts_in_use.discard(addr[0])

    def reserve(self, address: str, port: int | None = None) -> None:
        """Mark an address (every port, or one) as used by something else."""
        if port is None:
            self._reserved_hosts.add(address)
        else:
            self._reserved.add((address, port))

    def note_joined(self, hosts: Iterable[str]) -> None:
        """Groups found joined on the network now (the caller reads them, e.g. from
        ``/proc/net/igmp``); replaces the previous observation, unlike :meth:`reserve`."""
        self._joined = set(hosts)

    def in_use(self) -> set[Addr]:
        return set(self._in_use)

    def allocated(self) -> dict[str, Addr]:
        return dict(self._by_group)
