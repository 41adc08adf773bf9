"""Credentials for trying secured groups: a group CA, member and controller certificates.

``rmsec credentials`` makes a directory that holds everything a small deployment needs::

    rmsec credentials init DIR --group NAME   # ca.pem ca.key controller.pem controller.key
                                              # controller-signing.key (rekey signing seed)
    rmsec credentials issue DIR MEMBER [--days N] [--group NAME]   # MEMBER.pem MEMBER.key
    rmsec credentials revoke DIR MEMBER       # adds MEMBER's serial to DIR/crl.pem
    rmsec credentials show FILE.pem           # subject, validity, sha256 fingerprint

All keys are Ed25519.  The CA key doubles as the group *owner* key that signs announcements
(:mod:`rmsec.security.announcement`): members then need exactly one trust anchor, the CA
certificate, for TLS and for announcements.  Domain separation makes the double use safe: an
announcement signature covers ``"rmsec announcement v1\\0" ...`` while a certificate signature
covers DER that starts with a SEQUENCE tag.

Keys are written unencrypted with mode 0600: this is a tool for trying things out and for
tests; a production CA belongs in an HSM or at least behind a passphrase.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import ipaddress
import os
import pathlib
import sys
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rmsec.errors import ConfigError
from rmsec.security import sigkeys

#: The DNS name the controller's TLS certificate carries and members verify.
CONTROLLER_NAME = "rmsec-controller"
_BACKDATE = datetime.timedelta(minutes=5)


def _utc(now: datetime.datetime | float | None) -> datetime.datetime:
    if now is None:
        return datetime.datetime.now(datetime.UTC)
    if isinstance(now, (int, float)):
        return datetime.datetime.fromtimestamp(now, datetime.UTC)
    return now


def _key_pem(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_key(pem: bytes) -> ed25519.Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError("expected an Ed25519 private key")
    return key


def fingerprint(cert_pem_or_der: bytes) -> str:
    """``sha256:<hex>`` of the DER certificate (the allow-list form)."""
    der = cert_pem_or_der
    if cert_pem_or_der.lstrip().startswith(b"-----"):
        der = x509.load_pem_x509_certificate(cert_pem_or_der).public_bytes(serialization.Encoding.DER)
    return "sha256:" + hashlib.sha256(der).hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class Identity:
    """A certificate and its private key, both PEM."""

    certificate: bytes
    private_key: bytes

    @property
    def der(self) -> bytes:
        return x509.load_pem_x509_certificate(self.certificate).public_bytes(serialization.Encoding.DER)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.certificate)


@dataclasses.dataclass(frozen=True, slots=True)
class GroupCA:
    """The group's certificate authority, which is also the owner that signs announcements."""

    certificate: bytes
    private_key: bytes

    @classmethod
    def create(cls, name: str, *, days: float = 365, now: datetime.datetime | float | None = None) -> GroupCA:
        key = ed25519.Ed25519PrivateKey.generate()
        start = _utc(now)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"rmsec CA {name}")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - _BACKDATE)
            .not_valid_after(start + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, None)
        )
        return cls(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    @property
    def _key(self) -> ed25519.Ed25519PrivateKey:
        return _load_key(self.private_key)

    @property
    def _cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.certificate)

    def owner_key(self) -> sigkeys.SigningKey:
        """The owner signing key (the CA key) for announcements."""
        return sigkeys.signing_key_from_seed(self._key.private_bytes_raw())

    def owner_public(self) -> bytes:
        return owner_public_from_ca(self.certificate)

    def issue(
        self,
        common_name: str,
        *,
        days: float = 30,
        group: str | Sequence[str] | None = None,
        server: bool = False,
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
        now: datetime.datetime | float | None = None,
        not_before: datetime.datetime | float | None = None,
    ) -> Identity:
        """A certificate for a member (client) or the controller (``server=True``)."""
        key = ed25519.Ed25519PrivateKey.generate()
        start = _utc(now)
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        groups = [group] if isinstance(group, str) else list(group or ())
        attributes += [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, g) for g in groups]
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_utc(not_before) if not_before is not None else start - _BACKDATE)
            .not_valid_after(start + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, None)
        return Identity(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    def issue_controller(self, *, days: float = 365, hosts: Sequence[str] = ("127.0.0.1", "::1"),
                         now: datetime.datetime | float | None = None) -> Identity:
        """The controller's TLS server certificate: DNS name :data:`CONTROLLER_NAME`, plus
        ``localhost`` and the given IP addresses."""
        return self.issue(CONTROLLER_NAME, days=days, server=True,
                          dns_names=(CONTROLLER_NAME, "localhost"), ip_addresses=hosts, now=now)

    def crl(self, revoked: Sequence[bytes], *, now: datetime.datetime | float | None = None,
            days: float = 7) -> bytes:
        """A PEM CRL revoking the given PEM certificates."""
        start = _utc(now)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self._cert.subject)
            .last_update(start - _BACKDATE)
            .next_update(start + datetime.timedelta(days=days))
        )
        for pem in revoked:
            serial = x509.load_pem_x509_certificate(pem).serial_number
            entry = (x509.RevokedCertificateBuilder().serial_number(serial)
                     .revocation_date(start - _BACKDATE).build())
            builder = builder.add_revoked_certificate(entry)
        return builder.sign(self._key, None).public_bytes(serialization.Encoding.PEM)


def owner_public_from_ca(ca_pem: bytes) -> bytes:
    """The raw Ed25519 public key of a CA certificate: the owner key members trust."""
    key = x509.load_pem_x509_certificate(ca_pem).public_key()
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ConfigError("the group CA key is not Ed25519, so it cannot sign announcements")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclasses.dataclass(frozen=True, slots=True)
class MemberCredentials:
    """What ``open_sender`` / ``open_receiver`` / ``open_head(credentials=...)`` take."""

    member_id: bytes
    ca_certificate: bytes
    identity: Identity | None = None
    token: bytes | None = None

    @property
    def owner_keys(self) -> tuple[bytes, ...]:
        """Announcement signers this member trusts (the CA key)."""
        return (owner_public_from_ca(self.ca_certificate),)

    @classmethod
    def load(cls, directory: str | pathlib.Path, member: str) -> MemberCredentials:
        d = pathlib.Path(directory)
        return cls(member.encode(), _read(d / "ca.pem"),
                   Identity(_read(d / f"{member}.pem"), _read(d / f"{member}.key")))


@dataclasses.dataclass(frozen=True, slots=True)
class ControllerCredentials:
    """What ``open_controller(tls=...)`` takes: TLS identity, the CA (to verify members and to
    sign announcements as owner) and the seed of the key that signs rekeys."""

    ca: GroupCA
    identity: Identity
    signing_seed: bytes

    def signing_key(self) -> sigkeys.SigningKey:
        return sigkeys.signing_key_from_seed(self.signing_seed)

    @classmethod
    def create(cls, group: str, *, hosts: Sequence[str] = ("127.0.0.1", "::1")) -> ControllerCredentials:
        ca = GroupCA.create(group)
        return cls(ca, ca.issue_controller(hosts=hosts), os.urandom(sigkeys.SEED_LEN))

    @classmethod
    def load(cls, directory: str | pathlib.Path) -> ControllerCredentials:
        d = pathlib.Path(directory)
        return cls(
            GroupCA(_read(d / "ca.pem"), _read(d / "ca.key")),
            Identity(_read(d / "controller.pem"), _read(d / "controller.key")),
            _read(d / "controller-signing.key"),
        )


def _read(path: pathlib.Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None


def _write(path: pathlib.Path, data: bytes, *, secret: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


# ------------------------------------------------------------------------------------- CLI


def main(argv: list[str]) -> int:
    """``rmsec credentials init|issue|revoke|show``."""
    parser = argparse.ArgumentParser(prog="rmsec credentials", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_init = sub.add_parser("init", help="make a group CA and the controller's certificate")
    p_init.add_argument("directory")
    p_init.add_argument("--group", required=True, help="group name (in the CA's name)")
    p_init.add_argument("--days", type=float, default=365)
    p_init.add_argument("--host", action="append", default=None,
                        help="IP address the controller certificate names (repeat; default loopback)")
    p_issue = sub.add_parser("issue", help="issue a member certificate")
    p_issue.add_argument("directory")
    p_issue.add_argument("member", help="member id (the certificate's common name)")
    p_issue.add_argument("--days", type=float, default=30)
    p_issue.add_argument("--group", action="append", default=None,
                         help="group the certificate names (organisational unit; repeat)")
    p_revoke = sub.add_parser("revoke", help="revoke member certificates (writes crl.pem)")
    p_revoke.add_argument("directory")
    p_revoke.add_argument("member", nargs="+")
    p_show = sub.add_parser("show", help="print a certificate's subject, validity and fingerprint")
    p_show.add_argument("file")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except ConfigError as exc:
        print(f"rmsec credentials: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "show":
        pem = _read(pathlib.Path(args.file))
        cert = x509.load_pem_x509_certificate(pem)
        print(f"subject      {cert.subject.rfc4514_string()}")
        print(f"issuer       {cert.issuer.rfc4514_string()}")
        print(f"valid        {cert.not_valid_before_utc:%Y-%m-%d %H:%M} .. "
              f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
        print(f"fingerprint  {fingerprint(pem)}")
        return 0
    directory = pathlib.Path(args.directory)
    if args.command == "init":
        if (directory / "ca.key").exists():
            raise ConfigError(f"{directory} already holds a CA; refusing to overwrite it")
        ca = GroupCA.create(args.group, days=args.days)
        hosts = args.host or ["127.0.0.1", "::1"]
        controller = ca.issue_controller(days=args.days, hosts=hosts)
        _write(directory / "ca.pem", ca.certificate)
        _write(directory / "ca.key", ca.private_key, secret=True)
        _write(directory / "controller.pem", controller.certificate)
        _write(directory / "controller.key", controller.private_key, secret=True)
        _write(directory / "controller-signing.key", os.urandom(sigkeys.SEED_LEN), secret=True)
        print(f"CA and controller credentials for group {args.group!r} in {directory}")
        print(f"owner key (trust anchor) {ca.owner_public().hex()}")
        return 0
    ca = GroupCA(_read(directory / "ca.pem"), _read(directory / "ca.key"))
    if args.command == "issue":
        identity = ca.issue(args.member, days=args.days, group=args.group)
        _write(directory / f"{args.member}.pem", identity.certificate)
        _write(directory / f"{args.member}.key", identity.private_key, secret=True)
        print(f"{args.member}: {directory / (args.member + '.pem')} {identity.fingerprint}")
        return 0
    if args.command == "revoke":
        revoked_dir = directory / "revoked"
        for member in args.member:
            _write(revoked_dir / f"{member}.pem", _read(directory / f"{member}.pem"))
        pems = [p.read_bytes() for p in sorted(revoked_dir.glob("*.pem"))]
        _write(directory / "crl.pem", ca.crl(pems))
        print(f"{len(pems)} certificate(s) revoked in {directory / 'crl.pem'}")
        return 0
    raise AssertionError(args.command)  # pragma: no cover - argparse restricts the choices
