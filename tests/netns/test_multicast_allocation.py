"""The controller allocates the group's IP multicast address from the configured range
(DESIGN.md §4) and members that start from the announcement use it: ``rmsec controller|head|
recv|send`` as separate processes inside a network namespace this test creates and deletes
(only ``lo``, with a 224.0.0.0/4 route, so real kernel multicast and nothing leaves)."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rmsec.announcement import Announcement
from rmsec.credentials import owner_public_from_ca
from rmsec.io.allocation import parse_igmp_table
from rmsec.security.announcement import SignedAnnouncement

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.udp.test_cli_roles import GROUP_TOML, make_group, run_group

pytestmark = pytest.mark.netns

RANGE, PORTS = "239.192.77.0/24", (45000, 45099)


def test_allocated_address_reaches_every_member(netns: str, tmp_path: Path) -> None:
    toml = GROUP_TOML.replace('kind = "udp"', 'kind = "ip_multicast"') + (
        f'[multicast]\nrange = "{RANGE}"\nports = [{PORTS[0]}, {PORTS[1]}]\n'
    )
    config = make_group(tmp_path, ["head0", "rx0", "rx1", "tx"], toml)
    joined: list[set[str]] = []

    def look_at_the_namespace() -> None:
        table = subprocess.run(["ip", "netns", "exec", netns, "cat", "/proc/net/igmp"],
                               capture_output=True, text=True, check=True).stdout
        joined.append(parse_igmp_table(table))

    sent, received, ctl, data = run_group(
        tmp_path, config, prefix=("ip", "netns", "exec", netns), size=60_000,
        on_ready=look_at_the_namespace,
    )
    # The signed announcement names an address and port from the configured range ...
    ca = (tmp_path / "creds" / "ca.pem").read_bytes()
    signed = SignedAnnouncement.decode_untrusted(
        (tmp_path / "group.ann").read_bytes(), owner_keys=(owner_public_from_ca(ca),),
        now_wall=time.time(),
    )
    network = Announcement.decode_untrusted(signed.transport).network
    assert network.kind == "ip_multicast" and network.group is not None
    assert ipaddress.IPv4Address(network.group) in ipaddress.IPv4Network(RANGE)
    assert network.port is not None and PORTS[0] <= network.port <= PORTS[1]
    assert ctl["network"] == {"kind": "ip_multicast", "group": network.group, "port": network.port}
    # ... and the members that started from it joined that group.
    assert network.group in joined[0]
    assert sent["confirmed"] is True
    for i, result in enumerate(received):
        assert (result["count"], result["sha256"], result["error"]) == (
            sent["count"], sent["sha256"], None), result
        assert (tmp_path / f"rx{i}.out").read_bytes() == data
        # The data came by multicast to the allocated group, not down an overlay.
        assert result["stats"]["io_dropped_unroutable"] == 0
    assert sent["stats"]["io_dropped_unroutable"] == 0
