"""Small helpers shared by access policies: strict options, paths, certificate facts.

Access policies are configured from TOML; a misspelled option must be an error that says so,
not a policy silently running with its defaults.  Relative paths are relative to the
configuration file's directory, which :class:`rmsec.config.GroupConfig` passes as the
``base_dir`` option.
"""

from __future__ import annotations

import hashlib
import pathlib
from collections.abc import Mapping
from typing import Any

from rmsec.errors import ConfigError

BASE_DIR = "base_dir"


def check_options(policy: str, options: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(options) - known - {BASE_DIR})
    if unknown:
        raise ConfigError(
            f"access policy {policy!r}: unknown option(s) {unknown}; known: {sorted(known)}"
        )


def path_option(options: Mapping[str, Any], name: str) -> pathlib.Path | None:
    """Option ``name`` as a path (relative to ``base_dir`` when given), or ``None``."""
    value = options.get(name)
    if value is None:
        return None
    if not isinstance(value, (str, pathlib.Path)) or not str(value):
        raise ConfigError(f"option {name} must be a file path")
    path = pathlib.Path(value)
    base = options.get(BASE_DIR)
    if not path.is_absolute() and isinstance(base, (str, pathlib.Path)):
        path = pathlib.Path(base) / path
    return path


def read_option_file(path: pathlib.Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def fingerprint(certificate_der: bytes) -> str:
    """``sha256:<hex>`` of a DER certificate, the form allow lists use."""
    return "sha256:" + hashlib.sha256(certificate_der).hexdigest()
