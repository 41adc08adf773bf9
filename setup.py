"""Package map: the built-in plugins live in ``plugins/`` and install as ``rmsec_plugins``.

pyproject.toml holds all metadata; this file only exists because setuptools' declarative
config cannot rename a directory tree while discovering its subpackages.
"""

from setuptools import find_packages, setup

packages = find_packages(include=["rmsec", "rmsec.*"])
packages += ["rmsec_plugins"] + ["rmsec_plugins." + p for p in find_packages("plugins")]

setup(packages=packages, package_dir={"rmsec_plugins": "plugins"})
