"""Access policies open, allowlist and x509, and the credentials they consume."""

from __future__ import annotations

import pathlib

import pytest

from rmsec import plugins
from rmsec.credentials import GroupCA, fingerprint
from rmsec.errors import ConfigError
from rmsec.interfaces import AccessPolicy, Credentials

NOW = 1_900_000_000.0  # wall clock used throughout (2030)
DAY = 86400.0


def policy(name: str, **options: object) -> AccessPolicy:
    return plugins.get_access_policy(name)(options=options)


@pytest.fixture(scope="module")
def ca() -> GroupCA:
    return GroupCA.create("quotes", now=NOW - DAY, days=3650)


def creds(member: bytes, cert: bytes | None = None) -> Credentials:
    return Credentials(member, cert)


def test_builtins_are_registered() -> None:
    for name in ("open", "allowlist", "x509"):
        assert plugins.get_access_policy(name).name == name


def test_open_admits_everyone_with_optional_expiry() -> None:
    assert policy("open").decide(creds(b"anyone"), "g", NOW).admit
    decision = policy("open", valid_for=60).decide(creds(b"anyone"), "g", NOW)
    assert decision.admit and decision.valid_until == NOW + 60
    with pytest.raises(ConfigError, match="unknown option"):
        policy("open", valid_four=60)


def test_allowlist_ids_fingerprints_reload_and_removal(tmp_path: pathlib.Path, ca: GroupCA) -> None:
    carol = ca.issue("carol", now=NOW)
    listing = tmp_path / "members.txt"
    listing.write_text(f"# who may join\nalice\nbob  # until Friday\n{carol.fingerprint}\n")
    allow = policy("allowlist", file="members.txt", base_dir=str(tmp_path))
    assert allow.decide(creds(b"alice"), "g", NOW).admit
    assert allow.decide(creds(b"whoever", carol.der), "g", NOW).admit
    denied = allow.decide(creds(b"mallory"), "g", NOW)
    assert not denied.admit and "not on the allow list" in denied.reason
    listing.write_text("alice\n")
    allow.reload()
    assert not allow.still_valid(creds(b"bob"), "g", NOW).admit
    assert not allow.still_valid(creds(b"whoever", carol.der), "g", NOW).admit
    strict = policy("allowlist", members=["alice"], require_certificate=True)
    assert not strict.decide(creds(b"alice"), "g", NOW).admit
    assert strict.decide(creds(b"alice", carol.der), "g", NOW).admit


@pytest.mark.parametrize("options,match", [
    ({}, "needs a file or members"),
    ({"members": ["sha256:zz"]}, "bad fingerprint"),
    ({"file": "/nonexistent/list"}, "cannot read allow list"),
])
def test_allowlist_config_errors(options: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        policy("allowlist", **options)


@pytest.fixture()
def ca_file(tmp_path: pathlib.Path, ca: GroupCA) -> pathlib.Path:
    path = tmp_path / "ca.pem"
    path.write_bytes(ca.certificate)
    return path


def test_x509_admits_ca_issued_certificate_until_it_expires(ca: GroupCA, ca_file: pathlib.Path) -> None:
    alice = ca.issue("alice", now=NOW, days=2)
    decision = policy("x509", ca=str(ca_file)).decide(creds(b"alice", alice.der), "quotes", NOW)
    assert decision.admit
    assert decision.valid_until == pytest.approx(NOW + 2 * DAY)


@pytest.mark.parametrize("case,reason", [
    ("no certificate", "no certificate presented"),
    ("other CA", "not issued by the group CA"),
    ("expired", "certificate expired at"),
    ("not yet valid", "not valid before"),
    ("wrong name", "does not match the certificate's common name 'alice'"),
    ("no group", "does not name group 'quotes'"),
    ("is a CA", "not issued by the group CA"),
    ("garbage", "does not parse"),
])
def test_x509_denials_say_why(case: str, reason: str, ca: GroupCA, ca_file: pathlib.Path) -> None:
    member = b"alice"
    cert: bytes | None
    if case == "no certificate":
        cert = None
    elif case == "other CA":
        cert = GroupCA.create("evil", now=NOW - DAY).issue("alice", now=NOW).der
    elif case == "expired":
        cert = ca.issue("alice", now=NOW - 10 * DAY, days=1).der
    elif case == "not yet valid":
        cert = ca.issue("alice", now=NOW, not_before=NOW + DAY).der
    elif case == "wrong name":
        cert, member = ca.issue("alice", now=NOW).der, b"mallory"
    elif case == "no group":
        cert = ca.issue("alice", now=NOW, group="other").der
    elif case == "is a CA":
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        cert = x509.load_pem_x509_certificate(GroupCA.create("x").certificate).public_bytes(Encoding.DER)
    else:
        cert = b"\x30\x03\x02\x01\x01"
    x509_policy = policy("x509", ca=str(ca_file), require_group=case == "no group")
    decision = x509_policy.decide(creds(member, cert), "quotes", NOW)
    assert not decision.admit
    assert reason in decision.reason


def test_x509_group_attribute_and_revocation(tmp_path: pathlib.Path, ca: GroupCA, ca_file: pathlib.Path) -> None:
    alice = ca.issue("alice", now=NOW, group=["quotes", "news"])
    bob = ca.issue("bob", now=NOW, group="quotes")
    crl = tmp_path / "crl.pem"
    crl.write_bytes(ca.crl([], now=NOW))
    x509_policy = policy("x509", ca=str(ca_file), crl=str(crl), require_group=True)
    assert x509_policy.decide(creds(b"alice", alice.der), "quotes", NOW).admit
    assert x509_policy.decide(creds(b"bob", bob.der), "quotes", NOW).admit
    crl.write_bytes(ca.crl([bob.certificate], now=NOW))
    x509_policy.reload()
    revoked = x509_policy.still_valid(creds(b"bob", bob.der), "quotes", NOW)
    assert not revoked.admit and revoked.reason == "certificate revoked"
    assert x509_policy.still_valid(creds(b"alice", alice.der), "quotes", NOW).admit
    crl.write_bytes(GroupCA.create("evil").crl([]))
    with pytest.raises(ConfigError, match="not signed by a configured CA"):
        x509_policy.reload()


def test_x509_config_errors(tmp_path: pathlib.Path, ca: GroupCA) -> None:
    with pytest.raises(ConfigError, match="needs the ca option"):
        policy("x509")
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(ca.issue("x").certificate)
    with pytest.raises(ConfigError, match="is not a CA certificate"):
        policy("x509", ca=str(leaf))


def test_fingerprint_forms_agree(ca: GroupCA) -> None:
    alice = ca.issue("alice")
    assert fingerprint(alice.certificate) == fingerprint(alice.der) == alice.fingerprint


def test_credentials_command(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rmsec import credentials

    d = tmp_path / "creds"
    assert credentials.main(["init", str(d), "--group", "quotes"]) == 0
    assert credentials.main(["init", str(d), "--group", "quotes"]) == 2  # never overwrites a CA
    assert credentials.main(["issue", str(d), "alice", "--group", "quotes", "--days", "2"]) == 0
    assert (d / "alice.key").stat().st_mode & 0o777 == 0o600
    assert credentials.main(["show", str(d / "alice.pem")]) == 0
    out = capsys.readouterr().out
    assert "OU=quotes,CN=alice" in out and fingerprint((d / "alice.pem").read_bytes()) in out
    assert credentials.main(["revoke", str(d), "alice"]) == 0
    loaded = credentials.ControllerCredentials.load(d)
    member = credentials.MemberCredentials.load(d, "alice")
    assert member.owner_keys == (loaded.ca.owner_public(),)
    policy_ = policy("x509", ca=str(d / "ca.pem"), crl=str(d / "crl.pem"))
    import datetime

    now = datetime.datetime.now(datetime.UTC).timestamp()  # the command issued at real time
    assert member.identity is not None
    assert policy_.decide(creds(b"alice", member.identity.der), "quotes", now).reason == "certificate revoked"
