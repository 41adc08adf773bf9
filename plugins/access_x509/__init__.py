"""Access policy ``x509``: members hold certificates issued by the group's CA.

A member is admitted when the certificate it presented in the TLS handshake

- was issued (signed) directly by one of the configured CA certificates,
- is within its validity period (its ``notAfter`` becomes the membership's expiry: the
  controller expels the member then, and rekeys),
- is not a CA certificate itself,
- is not on the revocation list (if one is configured; re-read on :meth:`reload`, so a
  revocation expels at the next policy re-check),
- names the member: the subject common name equals the member id (unless
  ``bind_member_id = false``),
- and, with ``require_group = true``, names the group in a subject organisational unit.

Options: ``ca`` (PEM file, one or more CA certificates; relative to the config file),
``crl`` (PEM or DER CRL signed by a configured CA), ``require_group`` (default false),
``bind_member_id`` (default true).  ``rmsec credentials`` makes a CA and certificates that fit.
Chains through intermediate CAs are not supported: the group CA issues member certificates.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509.oid import NameOID

from rmsec.errors import ConfigError
from rmsec.hookspecs import hookimpl
from rmsec.interfaces import AccessPolicy, Credentials, Decision
from rmsec.registry import AccessPolicyRegistry
from rmsec.security.policyutil import check_options, path_option, read_option_file


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _stamp(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _texts(name: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    out = []
    for attribute in name.get_attributes_for_oid(oid):
        value = attribute.value
        out.append(value if isinstance(value, str) else bytes(value).decode("utf-8", "replace"))
    return out


class X509Policy(AccessPolicy):
    name = "x509"

    def __init__(self, *, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options=options)
        check_options(self.name, self.options, {"ca", "crl", "require_group", "bind_member_id"})
        ca_path = path_option(self.options, "ca")
        if ca_path is None:
            raise ConfigError("access policy 'x509' needs the ca option (the group CA's PEM file)")
        try:
            self.cas = x509.load_pem_x509_certificates(read_option_file(ca_path, "CA certificate"))
        except ValueError as exc:
            raise ConfigError(f"{ca_path}: not a PEM certificate file ({exc})") from None
        for ca in self.cas:
            if not _is_ca(ca):
                raise ConfigError(f"{ca_path}: {ca.subject.rfc4514_string()} is not a CA certificate")
        self._crl_path = path_option(self.options, "crl")
        self.require_group = self._flag("require_group", False)
        self.bind_member_id = self._flag("bind_member_id", True)
        self.revoked: set[tuple[str, int]] = set()
        self.reload()

    def _flag(self, name: str, default: bool) -> bool:
        value = self.options.get(name, default)
        if not isinstance(value, bool):
            raise ConfigError(f"access policy 'x509': {name} must be true or false")
        return value

    def reload(self) -> None:
        if self._crl_path is None:
            return
        data = read_option_file(self._crl_path, "revocation list")
        try:
            crl = (x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----")
                   else x509.load_der_x509_crl(data))
        except ValueError as exc:
            raise ConfigError(f"{self._crl_path}: not a CRL ({exc})") from None
        issuer = next((ca for ca in self.cas if ca.subject == crl.issuer), None)
        if issuer is None or not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
            raise ConfigError(f"{self._crl_path}: CRL is not signed by a configured CA")
        key = crl.issuer.rfc4514_string()
        self.revoked = {(key, entry.serial_number) for entry in crl}

    def _issuer(self, cert: x509.Certificate) -> x509.Certificate | None:
        for ca in self.cas:
            try:
                cert.verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
                continue
            return ca
        return None

    def decide(self, credentials: Credentials, group: str, now: float) -> Decision:
        if credentials.certificate is None:
            return Decision(False, "no certificate presented (group requires an X.509 certificate)")
        try:
            cert = x509.load_der_x509_certificate(credentials.certificate)
        except ValueError:
            return Decision(False, "certificate does not parse")
        issuer = self._issuer(cert)
        if issuer is None:
            return Decision(False, "certificate not issued by the group CA")
        if _is_ca(cert):
            return Decision(False, "a CA certificate cannot be a member certificate")
        moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
        if moment < cert.not_valid_before_utc:
            return Decision(False, f"certificate not valid before {_stamp(cert.not_valid_before_utc)}")
        if moment > cert.not_valid_after_utc:
            return Decision(False, f"certificate expired at {_stamp(cert.not_valid_after_utc)}")
        if (cert.issuer.rfc4514_string(), cert.serial_number) in self.revoked:
            return Decision(False, "certificate revoked")
        if self.bind_member_id:
            names = _texts(cert.subject, NameOID.COMMON_NAME)
            claimed = credentials.member_id.decode("utf-8", "replace")
            if claimed not in names:
                return Decision(False, f"member id {claimed!r} does not match the certificate's "
                                       f"common name {names[0] if names else None!r}")
        if self.require_group and group not in _texts(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME):
            return Decision(False, f"certificate does not name group {group!r}")
        return Decision(True, "certificate issued by the group CA",
                        cert.not_valid_after_utc.timestamp())


@hookimpl
def rmsec_register_access_policies(registry: AccessPolicyRegistry) -> None:
    registry.add(X509Policy)
