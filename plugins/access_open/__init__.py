"""Access policy ``open``: everyone who completes registration is admitted.

Registration still runs over TLS after the cookie round trip, so an open group is protected
against floods and its members' traffic against outsiders who never joined; it simply has no
notion of who may join.  Option ``valid_for`` (seconds) makes every membership expire that
long after admission, so members must re-register (a crude way to bound a leaver's access in
a group that rekeys only on membership changes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rmsec.errors import ConfigError
from rmsec.hookspecs import hookimpl
from rmsec.interfaces import AccessPolicy, Credentials, Decision
from rmsec.registry import AccessPolicyRegistry
from rmsec.security.policyutil import check_options


class OpenPolicy(AccessPolicy):
    name = "open"

    def __init__(self, *, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options=options)
        check_options(self.name, self.options, {"valid_for"})
        valid_for = self.options.get("valid_for")
        if valid_for is not None and (
            isinstance(valid_for, bool) or not isinstance(valid_for, (int, float)) or valid_for <= 0
        ):
            raise ConfigError("access policy 'open': valid_for must be a positive number of seconds")
        self.valid_for: float | None = None if valid_for is None else float(valid_for)

    def decide(self, credentials: Credentials, group: str, now: float) -> Decision:
        until = None if self.valid_for is None else now + self.valid_for
        return Decision(True, "open group", until)

    def still_valid(self, credentials: Credentials, group: str, now: float) -> Decision:
        # Re-deciding would extend ``valid_for`` forever: keep the expiry set at admission.
        return Decision(True, "open group")


@hookimpl
def rmsec_register_access_policies(registry: AccessPolicyRegistry) -> None:
    registry.add(OpenPolicy)
