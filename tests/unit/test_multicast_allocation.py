"""What ``open_controller`` does on the IP multicast network before it opens a socket: the
group's address and port come from ``GroupConfig.multicast_range`` / ``multicast_ports``,
unique in the process, never one joined on this host, released when the controller stops
(:mod:`rmsec.io.allocation`; the netns test runs it for real)."""

from __future__ import annotations

import ipaddress

import rmsec.io
from rmsec.config import GroupConfig
from rmsec.io.allocation import allocate_network, parse_igmp_table

RANGE, PORTS = "239.201.0.0/24", (41000, 41009)

IGMP = """\
Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter
1\tlo        :     2      V3
\t\t\t\t010000E0     1 0:00000000\t\t0
\t\t\t\t0302C9EF     1 0:00000000\t\t0
4\teth0      :     1      V3
\t\t\t\t010000E0     1 0:00000000\t\t0
"""


def config(group: str) -> GroupConfig:
    return GroupConfig(group=group, multicast_range=RANGE, multicast_ports=PORTS)


def test_igmp_table_lists_joined_groups_in_either_byte_order() -> None:
    assert parse_igmp_table(IGMP, "little") == {"224.0.0.1", "239.201.2.3"}
    assert parse_igmp_table(IGMP, "big") == {"1.0.0.224", "3.2.201.239"}
    assert parse_igmp_table("") == set()


def test_the_network_moves_onto_an_address_of_the_range() -> None:
    base = rmsec.io.ip_multicast(interface="127.0.0.1", loss=0.25, seed=5)
    allocation = allocate_network(config("alloc-a"), base, joined=set())
    try:
        group, port = allocation.address
        assert ipaddress.IPv4Address(group) in ipaddress.IPv4Network(RANGE)
        assert PORTS[0] <= port <= PORTS[1]
        net = allocation.network
        assert (net.info.group, net.info.port) == (group, port)
        assert (net.interface, net.loss, net.seed) == ("127.0.0.1", 0.25, 5)
    finally:
        allocation.release()


def test_addresses_are_unique_while_held_and_reused_once_released() -> None:
    base = rmsec.io.ip_multicast()
    first = allocate_network(config("alloc-b"), base, joined=set())
    twin = allocate_network(config("alloc-b"), base, joined=set())  # same group, run twice
    other = allocate_network(config("alloc-c"), base, joined=set())
    try:
        hosts = {first.address[0], twin.address[0], other.address[0]}
        assert len(hosts) == 3  # one group per address, whatever the port
    finally:
        for allocation in (twin, other):
            allocation.release()
    first.release()
    first.release()  # idempotent
    again = allocate_network(config("alloc-b"), base, joined=set())
    assert again.address == first.address  # stable per name: a restart keeps its address
    again.release()


def test_an_address_joined_on_this_host_is_never_handed_out() -> None:
    base = rmsec.io.ip_multicast()
    probe = allocate_network(config("alloc-d"), base, joined=set())
    probe.release()
    busy = allocate_network(config("alloc-d"), base, joined={probe.address[0]})
    try:
        assert busy.address[0] != probe.address[0]
    finally:
        busy.release()
