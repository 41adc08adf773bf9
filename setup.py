"""Package map: the built-in plugins live in ``plugins/`` and install as ``rmsec_plugins``;
the interop harness (``rmsec interop``) lives in ``interop/`` and installs as ``rmsec_interop``.

pyproject.toml holds all metadata; this file only exists because setuptools' declarative
config cannot rename a directory tree while discovering its subpackages.
"""

from setuptools import find_packages, setup

packages = find_packages(include=["rmsec", "rmsec.*"])
packages += ["rmsec_plugins"] + ["rmsec_plugins." + p for p in find_packages("plugins")]
packages += ["rmsec_interop"] + ["rmsec_interop." + p for p in find_packages("interop")]

setup(packages=packages, package_dir={"rmsec_plugins": "plugins", "rmsec_interop": "interop"})
