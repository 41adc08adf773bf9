"""Every pluggy hook specification of rmsec (project name ``rmsec``, prefix ``rmsec_``).

Registration hooks are synchronous, run once when the plugin manager starts, and receive a
typed registry.  Observation hooks are called by the trio layer only (never by the sans-IO
core), one implementation at a time through :class:`rmsec.plugins.HookRelay`: they run on the
event loop, so they must return quickly and must not block; whatever they return is ignored,
and an exception they raise is logged and counted (``hook_errors`` in the node's ``stats()``),
never propagated into the node.  Hooks evolve by adding arguments only, so a plugin written
today keeps working (pluggy passes an implementation only the arguments it names).

docs/plugins.md documents every hook; tests/trio/test_hooks.py tests every one.
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
    """Add :class:`~rmsec.interfaces.KeyManagement` classes with ``registry.add(cls)``.

    Called once per plugin when the plugin manager starts (the first look-up in a process).
    A name already taken is a :class:`~rmsec.errors.ConfigError` naming both plugins.
    """


@hookspec
def rmsec_register_source_auth(registry: SourceAuthRegistry) -> None:
    """Add :class:`~rmsec.interfaces.SourceAuth` classes with ``registry.add(cls)``.

    Called once per plugin when the plugin manager starts.
    """


@hookspec
def rmsec_register_access_policies(registry: AccessPolicyRegistry) -> None:
    """Add :class:`~rmsec.interfaces.AccessPolicy` classes with ``registry.add(cls)``.

    Called once per plugin when the plugin manager starts.
    """


# ------------------------------------------------------------------------------- observation


@hookspec
def rmsec_member_joined(group: str, member_id: bytes, epoch: int) -> None:
    """The controller of ``group`` welcomed ``member_id``, which starts in ``epoch``.

    Called by the controller's channel (``open_controller``) once per welcome, for every role
    (a repair head is welcomed too, without a key).
    """


@hookspec
def rmsec_member_left(group: str, member_id: bytes, reason: str) -> None:
    """``member_id`` left ``group``: it said so, or its control connection was lost.

    Called by the controller's channel.  Membership is the control connection, so a member
    whose process died is reported here (``reason`` says which).
    """


@hookspec
def rmsec_member_expelled(group: str, member_id: bytes, reason: str) -> None:
    """The controller expelled ``member_id`` from ``group``: the access policy withdrew it
    (expiry, revocation, removal from a list) or the operator called ``ctl.expel``.

    Called by the controller's channel; the rekey that shuts the member out follows as
    :func:`rmsec_rekey_done`.
    """


@hookspec
def rmsec_rekey_done(group: str, epoch: int, rekey_bytes: int, members: int) -> None:
    """The controller moved ``group`` to ``epoch``.

    ``rekey_bytes`` is the size of the signed rekey multicast to the existing members (0 when
    none needed one, e.g. the first join); ``members`` is how many members hold the new key.
    Called by the controller's channel once per epoch (joins, leaves, batches, refreshes).
    """


@hookspec
def rmsec_auth_failure(group: str, where: str, detail: str, what: str, count: int) -> None:
    """Something failed authentication at the node ``where`` (``"receiver alice"``: role and
    member id).

    ``what`` is the kind of thing: ``data`` (a data packet failed source authentication),
    ``aead`` (a data or authentication frame did not open under the group key: altered on
    the way, or sent by someone without the key), ``rekey``, ``recovery`` (a rekey or
    key-recovery message without a valid controller signature), ``welcome``, ``announcement``
    (a session announcement that is not signed by a trusted owner; ``group`` is then ``""``:
    nothing in it can be trusted).
    ``detail`` is a human-readable reason.

    Aggregated: a node calls this at once for the first failure of a kind, then at most once
    per :data:`rmsec.plugins.AUTH_FAILURE_INTERVAL` seconds per kind, with ``count`` the
    number of failures the call stands for (failures still pending when the node closes are
    reported then), so a flood of forged packets costs one call per second, not one per packet.
    Called by the secure receiver, head and sender channels (and ``open_*`` for announcements).
    """


@hookspec
def rmsec_head_changed(group: str, node_id: bytes, old_head: bytes | None, new_head: bytes) -> None:
    """The member ``node_id`` (its transport node id) bound to ``new_head`` in ``group``'s
    repair tree: first bind (``old_head`` is ``None``) or re-affiliation after its head went
    silent or left (``old_head`` the node id of the head it lost).

    Called by the secure receiver, head and sender channels from the transport's ``Bound``
    events (the controller is the root of the tree and never binds).
    """


#: Hooks called once at start-up with a registry.
REGISTRATION_HOOKS = (
    "rmsec_register_key_management",
    "rmsec_register_source_auth",
    "rmsec_register_access_policies",
)
#: Hooks the trio layer calls while a group runs.
OBSERVATION_HOOKS = (
    "rmsec_member_joined",
    "rmsec_member_left",
    "rmsec_member_expelled",
    "rmsec_rekey_done",
    "rmsec_auth_failure",
    "rmsec_head_changed",
)
