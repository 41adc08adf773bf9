"""Key management ``oft``: one-way function tree, strengthened against collusion.

See :mod:`.scheme` for the construction and the collusion fix, :mod:`.wire` for the formats
and functions, :mod:`.member` for the member side, and docs/plugins-keymgmt.md.
"""

from __future__ import annotations

from rmsec.hookspecs import hookimpl
from rmsec.registry import KeyManagementRegistry

from .member import OftMember
from .scheme import OftScheme, OriginalOftScheme

__all__ = ["OftMember", "OftScheme", "OriginalOftScheme"]


@hookimpl
def rmsec_register_key_management(registry: KeyManagementRegistry) -> None:
    registry.add(OftScheme)
