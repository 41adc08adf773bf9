"""Every pluggy hook specification of rmsec (project name ``rmsec``, prefix ``rmsec_``).

Registration hooks are synchronous, run once when the plugin manager starts, and receive a
typed registry.  Observation hooks are called by the trio layer only (never by the sans-IO
core) and must return quickly: they run on the event loop.  Hooks evolve by adding arguments
only, so a plugin written today keeps working.
"""

from __future__ import annotations

import pluggy

from rmsec.registry import AccessPolicyRegistry, KeyManagementRegistry, SourceAuthRegistry

PROJECT = "rmsec"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# ------------------------------------------------------------------------------ registration


@hookspec
def rmsec_register_key_management(registry: KeyManagementRegistry) -> None:
    """Add :class:`~rmsec.interfaces.KeyManagement` classes with ``registry.add(cls)``."""


@hookspec
def rmsec_register_source_auth(registry: SourceAuthRegistry) -> None:
    """Add :class:`~rmsec.interfaces.SourceAuth` classes with ``registry.add(cls)``."""


@hookspec
def rmsec_register_access_policies(registry: AccessPolicyRegistry) -> None:
    """Add :class:`~rmsec.interfaces.AccessPolicy` classes with ``registry.add(cls)``."""


# ------------------------------------------------------------------------------- observation


@hookspec
def rmsec_member_joined(group: str, member_id: bytes, epoch: int) -> None:
    """The controller admitted ``member_id``; ``epoch`` is the epoch it starts in."""


@hookspec
def rmsec_member_left(group: str, member_id: bytes, reason: str) -> None:
    """``member_id`` left of its own accord or was pruned by the transport."""


@hookspec
def rmsec_member_expelled(group: str, member_id: bytes, reason: str) -> None:
    """The access policy expelled ``member_id`` (expiry, revocation, removal from a list)."""


@hookspec
def rmsec_rekey_done(group: str, epoch: int, rekey_bytes: int, members: int) -> None:
    """The controller moved the group to ``epoch`` with a rekey of ``rekey_bytes``."""


@hookspec
def rmsec_auth_failure(group: str, where: str, detail: str) -> None:
    """A packet, rekey or announcement failed authentication at node ``where``."""


@hookspec
def rmsec_head_changed(group: str, node_id: bytes, old_head: bytes | None, new_head: bytes) -> None:
    """A member re-affiliated from ``old_head`` to ``new_head`` (``None`` on first bind)."""
