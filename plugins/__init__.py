"""rmsec's built-in plugins, installed as the package ``rmsec_plugins``.

Each subpackage is one plugin, registered exactly as a third party's would be: it defines
``@hookimpl`` functions from :mod:`rmsec.hookspecs`.  :mod:`rmsec.plugins` discovers every
subpackage here, so adding a built-in needs no edit elsewhere.
"""
