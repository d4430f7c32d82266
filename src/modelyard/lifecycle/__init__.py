"""The lifecycle of a version (seed 003): raw -> validated -> production.

The validation gates live in `policy` (what a policy file asks: checks, allowed pickle globals,
approval rules, the benchmark), `checks` (`run_checks`: built-in, metric and command checks on
one version) and `report` (`ValidationReport`, stored with the version). The other modules of
this package build and promote the validated and production versions.

Nothing is re-exported here, so that importing one lifecycle module (the CLI does, for each
command) does not import them all.
"""
