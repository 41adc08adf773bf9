"""``rmsec bench ...``: benchmarks that print JSON results (and optional PNG charts).

Each benchmark is one module with ``main(argv) -> int``; :mod:`rmsec.bench.common` holds what
they share.  Benchmarks are never timed tests: the test suite only checks that they run.
"""
