"""Every exception rmsec raises on purpose.

Two families, as in h11: :class:`LocalError` means the caller misused the API (a bug on this
side); :class:`RemoteError` means bytes from the network were wrong.  Untrusted input only ever
produces :class:`MalformedPacket` (could not be parsed) or :class:`AuthenticationFailed`
(parsed, but not genuine) so that no error message becomes an oracle for an attacker.
"""

from __future__ import annotations


class RmsecError(Exception):
    """Base of every rmsec exception."""


class LocalError(RmsecError):
    """The caller used the API wrongly (bad argument, wrong state)."""


class ConfigError(LocalError):
    """A configuration value is invalid; the message says which and how to fix it."""


class RemoteError(RmsecError):
    """A peer sent something this node cannot accept."""


class MalformedPacket(RemoteError):
    """Untrusted bytes failed strict decoding: wrong version, type, field type, range or size."""


class AuthenticationFailed(RemoteError):
    """A packet or message was well formed but not genuine (one opaque error: no oracle)."""


class NotForMe(RemoteError):
    """A well-formed rekey message carried nothing this member can use."""


class ChannelClosed(RmsecError):
    """The channel was closed, by this side or because the node left the group."""


class Pruned(ChannelClosed):
    """This member was removed from the repair tree (slow receiver policy or expulsion)."""
