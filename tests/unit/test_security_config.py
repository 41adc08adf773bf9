"""GroupConfig from TOML with clear errors; multicast address allocation."""

from __future__ import annotations

import pathlib

import pytest

from rmsec.config import GroupConfig, RekeyPolicy
from rmsec.errors import ConfigError, LocalError
from rmsec.security.addresses import MulticastAllocator

EXAMPLE = """
[group]
name = "quotes"
aead = "chacha20-poly1305"
epoch_grace = 1.5

[key_management]
name = "lkh"
degree = 4

[source_auth]
name = "groupmac"
mac_len = 12

[access_policy]
name = "x509"
ca = "ca.pem"

[rekey]
policy = "batch"
interval = 0.5
refresh = 60

[transport]
mtu = 1200

[multicast]
range = "239.192.0.0/16"
ports = [41000, 41010]
"""


def test_full_example(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "group.toml"
    path.write_text(EXAMPLE)
    config = GroupConfig.from_toml(path)
    assert config.group == "quotes" and config.aead == "chacha20-poly1305"
    assert config.key_management == "lkh" and dict(config.key_management_options) == {"degree": 4}
    assert dict(config.source_auth_options) == {"mac_len": 12}
    assert config.access_policy_options == {"ca": "ca.pem", "base_dir": str(tmp_path)}
    assert config.rekey == RekeyPolicy("batch", 0.5, 60.0)
    assert config.transport.mtu == 1200
    assert config.multicast_ports == (41000, 41010)
    again = GroupConfig.from_mapping(config.to_mapping())
    assert again.rekey == config.rekey and again.transport == config.transport


def test_defaults() -> None:
    config = GroupConfig.from_toml_text('[group]\nname = "g"\n')
    assert (config.key_management, config.source_auth, config.access_policy) == ("flat", "ed25519", "x509")
    assert config.rekey.mode == "immediate" and config.aead == "aes-128-gcm"


@pytest.mark.parametrize("text,expected", [
    ('[group]\nname = "g"\n[rekey]\npolicy = "sometimes"\n', "[rekey] policy = 'sometimes': choose one of immediate, batch, periodic"),
    ('[group]\nname = "g"\n[rekey]\ninterval = -1\n', "[rekey] interval must be a positive number"),
    ('[group]\nname = "g"\n[group2]\n', "unknown table(s) ['group2']"),
    ('[group]\nnam = "g"\n', "[group] unknown key(s) ['nam']"),
    ("[group]\n", '[group] needs name = "..."'),
    ('[group]\nname = "g"\naead = "rot13"\n', "aead 'rot13': choose one of"),
    ('[group]\nname = "g"\n[transport]\nmtu = 10\n', "[transport] invalid transport config: mtu=10"),
    ('[group]\nname = "g"\n[transport]\nspeed = 10\n', "unknown transport option(s) ['speed']"),
    ('[group]\nname = "g"\n[source_auth]\nmac_len = 3\n', '[source_auth] needs name'),
    ('[group]\nname = 5\n', "[group] name must be str"),
    ('[group\n', "not valid TOML"),
])
def test_errors_name_the_problem(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        GroupConfig.from_toml_text(text, source="g.toml")
    assert expected in str(info.value) and str(info.value).startswith("g.toml")


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        GroupConfig.from_toml("/nonexistent/rmsec.toml")


def test_allocator_never_hands_out_an_address_in_use() -> None:
    allocator = MulticastAllocator("239.255.0.0/29", ports=(40000, 40003))
    allocator.reserve("239.255.0.5")  # something else uses it
    first = allocator.allocate("g0")
    assert allocator.allocate("g0") == first  # stable while held
    hosts = {first[0]}
    for i in range(1, 10):
        try:
            address, port = allocator.allocate(f"g{i}")
        except LocalError:
            break
        assert address not in hosts and address != "239.255.0.5"  # one group per address
        assert 40000 <= port <= 40003
        hosts.add(address)
    # Six usable addresses (x.1 .. x.6), one reserved: five groups, then the range is full.
    assert hosts == {f"239.255.0.{i}" for i in (1, 2, 3, 4, 6)}
    allocator.release("g0")
    assert allocator.allocate("late")[0] == first[0]


@pytest.mark.parametrize("network", ["10.0.0.0/8", "224.0.0.0/24", "nonsense"])
def test_allocator_refuses_unscoped_ranges(network: str) -> None:
    with pytest.raises(ConfigError):
        MulticastAllocator(network)
