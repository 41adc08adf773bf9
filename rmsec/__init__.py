"""rmsec: reliable multicast with an integrated, pluggable security layer, on trio.

The public API (DESIGN.md §6) is imported lazily, so ``import rmsec.wire`` or
``import rmsec.transport`` (the sans-IO layers) does not pull in trio and sockets.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from rmsec import errors, io
    from rmsec.announcement import Announcement
    from rmsec.api import (
        EventLog,
        HeadChannel,
        Message,
        ReceiverChannel,
        SenderChannel,
        open_head,
        open_receiver,
        open_sender,
    )
    from rmsec.secure_api import ControllerChannel, open_controller
    from rmsec.transport.config import TransportConfig

#: public name -> module that defines it (None: the name is a submodule).
_LAZY: dict[str, str | None] = {
    "open_sender": "rmsec.api",
    "open_head": "rmsec.api",
    "open_receiver": "rmsec.api",
    "open_controller": "rmsec.secure_api",
    "ControllerChannel": "rmsec.secure_api",
    "Message": "rmsec.api",
    "EventLog": "rmsec.api",
    "SenderChannel": "rmsec.api",
    "ReceiverChannel": "rmsec.api",
    "HeadChannel": "rmsec.api",
    "Announcement": "rmsec.announcement",
    "TransportConfig": "rmsec.transport.config",
    "errors": None,
    "io": None,
}

__all__ = [
    "Announcement",
    "ControllerChannel",
    "EventLog",
    "HeadChannel",
    "Message",
    "ReceiverChannel",
    "SenderChannel",
    "TransportConfig",
    "__version__",
    "errors",
    "io",
    "open_controller",
    "open_head",
    "open_receiver",
    "open_sender",
]


def __getattr__(name: str) -> Any:
    try:
        module_name = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'rmsec' has no attribute {name!r}") from None
    if module_name is None:
        value: Any = importlib.import_module(f"rmsec.{name}")
    else:
        value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
