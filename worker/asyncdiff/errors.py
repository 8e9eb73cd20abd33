"""Exceptions of the library.

Why separate: callers (the worker, the examples) map these to exit codes and messages without importing torch.
"""


class AsyncDiffError(Exception):
    """Base class of every error raised by the library."""


class ConfigError(AsyncDiffError, ValueError):
    """A parameter is invalid. The message names the parameter, the value and the allowed values."""

    def __init__(self, parameter: str, value: object, allowed: str) -> None:
        self.parameter = parameter
        self.value = value
        self.allowed = allowed
        super().__init__(f"{parameter}={value!r} is invalid: {allowed}")


class PeerError(AsyncDiffError, RuntimeError):
    """Another rank failed or stopped answering within the timeout."""
