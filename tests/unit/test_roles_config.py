"""The role commands' configuration checks (rmsec/roles): every mistake is one ConfigError
that names the file, the table and the key, and says how to fix it; no sockets here."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from rmsec import credentials
from rmsec.errors import ConfigError
from rmsec.roles import controller, member_setup

BASE = """\
[group]
name = "cfg-test"
[access_policy]
name = "open"
[controller]
credentials = "creds"
announcement = "out/group.ann"
"""


@pytest.fixture(scope="module")
def creds_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("roles")
    assert credentials.main(["init", str(directory / "creds"), "--group", "cfg-test"]) == 0
    return directory


def write(directory: Path, text: str) -> Path:
    path = directory / "group.toml"
    path.write_text(text)
    return path


def test_a_good_configuration(creds_dir: Path) -> None:
    text = BASE + '[network]\nkind = "ip_multicast"\nhost = "10.1.2.3"\nloss = 0.1\n'
    setup = controller.load(write(creds_dir, text))
    assert setup.group.group == "cfg-test" and setup.group.access_policy == "open"
    assert setup.credentials == creds_dir / "creds"
    assert setup.announcement == creds_dir / "out" / "group.ann"
    assert (setup.host, setup.port, setup.network_kind, setup.data_host) == (
        "127.0.0.1", 0, "ip_multicast", "10.1.2.3")
    network = setup.network()
    assert network.info.kind == "ip_multicast"  # its address is allocated when it starts
    assert controller.load(write(creds_dir, BASE), announce="x.ann").announcement == Path("x.ann")


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t + '[network]\nkind = "memory"\n',
     "[network] kind = 'memory': choose one of udp, ip_multicast"),
    (lambda t: t + "[network]\nloss = 1.5\n", "[network] loss must be within [0, 1)"),
    (lambda t: t + "[network]\nport = 3\n", "[network] has unknown key(s) ['port']"),
    (lambda t: t.replace('credentials = "creds"', 'credentials = "elsewhere"'),
     "lacks ca.pem, ca.key, controller.pem, controller.key, controller-signing.key; make them "
     "with `rmsec credentials init"),
    (lambda t: t.replace('credentials = "creds"\n', ""), '[controller] needs credentials = "DIR"'),
    (lambda t: t.replace('announcement = "out/group.ann"\n', ""),
     "say where to write the announcement"),
    (lambda t: t.replace('announcement = "out/group.ann"', "announcement = 3"),
     "[controller] announcement must be str, got 3"),
    (lambda t: t + '[key_management]\nname = "lhk"\n',
     "[key_management] no key-management scheme named 'lhk'"),
    (lambda t: t + "[rekey]\npolicy = \"sometimes\"\n", "[rekey] policy = 'sometimes'"),
    (lambda t: t + "[extra]\n", "unknown table(s) ['extra']"),
])
def test_mistakes_say_what_and_where(creds_dir: Path, change: object, message: str) -> None:
    assert callable(change)
    with pytest.raises(ConfigError) as info:
        controller.load(write(creds_dir, change(BASE)))
    assert message in str(info.value)
    assert str(info.value).startswith(str(creds_dir / "group.toml"))


def test_member_toml_names_the_announcement_and_the_command_line_wins(tmp_path: Path) -> None:
    path = tmp_path / "alice.toml"
    path.write_text('[member]\nannouncement = "g.ann"\ncredentials = "c"\nname = "alice"\n')
    args = argparse.Namespace(source=str(path), credentials=None, name="bob", host=None)
    assert member_setup(args) == (tmp_path / "g.ann", str(tmp_path / "c"), "bob", None)
    path.write_text('[member]\nname = "alice"\n')
    with pytest.raises(ConfigError, match=r'\[member\] needs announcement = "FILE"'):
        member_setup(args)
    plain = argparse.Namespace(source="g.ann", credentials="c", name="n", host="h")
    assert member_setup(plain) == (Path("g.ann"), "c", "n", "h")
