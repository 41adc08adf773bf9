"""rmsec plugin: the ``cn-pattern`` access policy (see README.md).

rmsec loads this module through the entry point in pyproject.toml and calls its
``@hookimpl`` functions; the policy itself lives in :mod:`rmsec_example_plugin.policy`.
"""

from __future__ import annotations

from rmsec.hookspecs import hookimpl
from rmsec.registry import AccessPolicyRegistry

from rmsec_example_plugin.policy import CommonNamePattern

__all__ = ["CommonNamePattern", "rmsec_register_access_policies"]
__version__ = "0.1.0"


@hookimpl
def rmsec_register_access_policies(registry: AccessPolicyRegistry) -> None:
    registry.add(CommonNamePattern)
