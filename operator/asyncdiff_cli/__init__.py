"""The `asyncdiff` command: one entry point, subcommands owned by the packages that implement them.

Why a dispatcher: `asyncdiff run` needs torch (the worker), `asyncdiff dev-cluster` and `asyncdiff submit` must work
without it (operator side). Each subcommand's module is imported only when that subcommand runs.
"""
