"""Key management ``lkh``: logical key hierarchy with batch rekeying and compact server state.

See :mod:`.scheme` for the construction, :mod:`.wire` for the formats, :mod:`.member` for the
member side, and docs/plugins-keymgmt.md.
"""

from __future__ import annotations

from rmsec.hookspecs import hookimpl
from rmsec.registry import KeyManagementRegistry

from .member import LkhMember
from .scheme import LkhScheme

__all__ = ["LkhMember", "LkhScheme"]


@hookimpl
def rmsec_register_key_management(registry: KeyManagementRegistry) -> None:
    registry.add(LkhScheme)
