"""Key management ``regions``: regional key managers on repair heads (trunk + leaf regions).

See :mod:`.scheme` for the construction and the trust it places in the heads, :mod:`.wire`
for the formats, :mod:`.member` for the member side, :mod:`.manager` for a manager head's
side, and docs/plugins-keymgmt.md.
"""

from __future__ import annotations

from rmsec.hookspecs import hookimpl
from rmsec.registry import KeyManagementRegistry

from .manager import RegionalManagerMember
from .member import RegionsMember
from .scheme import RegionalManager, RegionsScheme

__all__ = ["RegionalManager", "RegionalManagerMember", "RegionsMember", "RegionsScheme"]


@hookimpl
def rmsec_register_key_management(registry: KeyManagementRegistry) -> None:
    registry.add(RegionsScheme)
