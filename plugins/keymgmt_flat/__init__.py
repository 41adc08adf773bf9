"""Key management ``flat``: the group key wrapped for each member (the O(n) baseline).

See :mod:`.scheme` for the construction and its wire formats, and docs/plugins-keymgmt.md.
"""

from __future__ import annotations

from rmsec.hookspecs import hookimpl
from rmsec.registry import KeyManagementRegistry

from .scheme import FlatMember, FlatScheme

__all__ = ["FlatMember", "FlatScheme"]


@hookimpl
def rmsec_register_key_management(registry: KeyManagementRegistry) -> None:
    registry.add(FlatScheme)
