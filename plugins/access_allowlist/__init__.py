"""Access policy ``allowlist``: member ids or certificate fingerprints from a list.

Options:

``file``
    a text file, one entry per line: a member id, or ``sha256:<hex>`` (the SHA-256 of a
    member's DER certificate, as ``rmsec credentials`` prints it); ``#`` starts a comment.
    Re-read on :meth:`reload` (the controller reloads every ``policy_recheck`` seconds):
    removing an entry expels that member and rekeys the group.
``members``
    the same entries inline (a list of strings), added to the file's.
``require_certificate``
    when true, a member id entry only admits a member that also presented a certificate
    (TLS verified it against the group CA).  Default false.

A member-id entry trusts the id the member claims: without certificates (or a TLS setup
that binds ids to certificates) anyone can claim an id on the list.  Fingerprints bind the
admission to a key the member proved it holds in the TLS handshake.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rmsec.errors import ConfigError
from rmsec.hookspecs import hookimpl
from rmsec.interfaces import AccessPolicy, Credentials, Decision
from rmsec.registry import AccessPolicyRegistry
from rmsec.security.policyutil import check_options, fingerprint, path_option, read_option_file

MAX_ENTRIES = 1_000_000


def parse_entries(text: str, source: str) -> tuple[set[bytes], set[str]]:
    """Member ids and fingerprints from allow-list text."""
    ids: set[bytes] = set()
    prints: set[str] = set()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.lower().startswith("sha256:"):
            digest = line[7:].replace(":", "").lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ConfigError(f"{source}:{number}: bad fingerprint {line!r}")
            prints.add("sha256:" + digest)
        else:
            ids.add(line.encode())
        if len(ids) + len(prints) > MAX_ENTRIES:
            raise ConfigError(f"{source}: more than {MAX_ENTRIES} entries")
    return ids, prints


class AllowListPolicy(AccessPolicy):
    name = "allowlist"

    def __init__(self, *, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options=options)
        check_options(self.name, self.options, {"file", "members", "require_certificate"})
        self._path = path_option(self.options, "file")
        inline = self.options.get("members", [])
        if not isinstance(inline, list) or not all(isinstance(m, str) for m in inline):
            raise ConfigError("access policy 'allowlist': members must be a list of strings")
        self._inline = "\n".join(inline)
        require = self.options.get("require_certificate", False)
        if not isinstance(require, bool):
            raise ConfigError("access policy 'allowlist': require_certificate must be true or false")
        self.require_certificate = require
        if self._path is None and not inline:
            raise ConfigError("access policy 'allowlist' needs a file or members option")
        self.ids: set[bytes] = set()
        self.fingerprints: set[str] = set()
        self.reload()

    def reload(self) -> None:
        ids, prints = parse_entries(self._inline, "members option")
        if self._path is not None:
            text = read_option_file(self._path, "allow list").decode("utf-8", "replace")
            more_ids, more_prints = parse_entries(text, str(self._path))
            ids |= more_ids
            prints |= more_prints
        self.ids, self.fingerprints = ids, prints

    def decide(self, credentials: Credentials, group: str, now: float) -> Decision:
        if credentials.certificate is not None and fingerprint(credentials.certificate) in self.fingerprints:
            return Decision(True, "certificate on the allow list")
        if credentials.member_id in self.ids:
            if self.require_certificate and credentials.certificate is None:
                return Decision(False, "allow list requires a certificate")
            return Decision(True, "member on the allow list")
        return Decision(False, f"{credentials.member_id!r} is not on the allow list of group {group!r}")


@hookimpl
def rmsec_register_access_policies(registry: AccessPolicyRegistry) -> None:
    registry.add(AllowListPolicy)
