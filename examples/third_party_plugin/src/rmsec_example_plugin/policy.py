"""Access policy ``cn-pattern``: admit members whose certificate common name matches one of a
list of shell-style patterns (``sensor-*``, ``desk-??``), case-sensitively.

What the policy relies on: the controller's TLS layer has already verified the member's
certificate against the group CA (rmsec's controller requires a client certificate and checks
it before the policy is asked), so the subject in ``credentials.certificate`` is the CA's
word.  The policy adds the rule about *which* names may join, binds the claimed member id to
the name (option ``bind_member_id``, default true) and makes the certificate's ``notAfter``
the membership's expiry, so the controller expels the member (and rekeys) when it runs out.

Options:

``patterns`` (required)
    a pattern or a list of patterns, matched with :func:`fnmatch.fnmatchcase`;
``bind_member_id`` (default ``true``)
    the member id must equal the common name.

Sans-IO like every rmsec plugin: ``now`` comes in (wall-clock seconds), nothing is read
from the clock or the network.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from rmsec.errors import ConfigError
from rmsec.interfaces import AccessPolicy, Credentials, Decision

OPTIONS = frozenset({"patterns", "bind_member_id"})


class CommonNamePattern(AccessPolicy):
    name = "cn-pattern"

    def __init__(self, *, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options=options)
        unknown = sorted(set(self.options) - OPTIONS)
        if unknown:
            raise ConfigError(
                f"access policy 'cn-pattern': unknown option(s) {unknown}; known: {sorted(OPTIONS)}"
            )
        patterns = self.options.get("patterns")
        if isinstance(patterns, str):
            patterns = [patterns]
        if (
            not isinstance(patterns, (list, tuple)) or not patterns
            or not all(isinstance(p, str) and p for p in patterns)
        ):
            raise ConfigError(
                "access policy 'cn-pattern': option 'patterns' must be a pattern or a list of "
                "patterns, e.g. ['sensor-*']"
            )
        bind = self.options.get("bind_member_id", True)
        if not isinstance(bind, bool):
            raise ConfigError("access policy 'cn-pattern': bind_member_id must be true or false")
        self.patterns: tuple[str, ...] = tuple(patterns)
        self.bind_member_id = bind

    def decide(self, credentials: Credentials, group: str, now: float) -> Decision:
        if credentials.certificate is None:
            return Decision(False, "a certificate is required")
        try:
            certificate = x509.load_der_x509_certificate(credentials.certificate)
        except ValueError:
            return Decision(False, "the certificate cannot be read")
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if len(names) != 1 or not isinstance(names[0].value, str):
            return Decision(False, "the certificate must name exactly one common name")
        common_name = names[0].value
        if self.bind_member_id and credentials.member_id != common_name.encode():
            return Decision(
                False, f"member id does not match the certificate's common name {common_name!r}"
            )
        if not any(fnmatch.fnmatchcase(common_name, pattern) for pattern in self.patterns):
            # The reason goes to the member: say what is wrong, not which names would pass.
            return Decision(False, f"common name {common_name!r} is not admitted to {group!r}")
        not_before = certificate.not_valid_before_utc.timestamp()
        not_after = certificate.not_valid_after_utc.timestamp()
        if not not_before <= now < not_after:
            return Decision(False, "the certificate is not valid now")
        return Decision(True, f"common name {common_name!r} admitted", valid_until=not_after)
