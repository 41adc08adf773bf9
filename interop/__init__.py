"""The interop harness (DESIGN.md §7, §8): every installed key-management scheme, source
authentication method and access policy, in every combination, run through short scenarios
on a whole secured group (``rmsec interop``).

Installed as the package ``rmsec_interop`` (setup.py maps ``interop/`` to it, as ``plugins/``
becomes ``rmsec_plugins``).  Modules, one idea each:

- :mod:`.group`: a running secured group on the memory network (controller, head, sender,
  members that record what they read) and the credentials every access policy needs;
- :mod:`.scenarios`: what is run on each combination (``churn``, ``recovery``, ``forgery``);
- :mod:`.matrix`: the combination matrix, its report and the ``rmsec interop`` command.

docs/interop.md says what the matrix runs and holds the latest full result.
"""
