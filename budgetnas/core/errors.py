"""The one exception tree of the project.

Every error a user can cause derives from :class:`BudgetNASError`; the CLI turns it into one line
on stderr and exit code 2, the server into a 4xx with the message. This module imports nothing
from the project so every package (``spaces`` and ``db`` included) may use it.
"""

from __future__ import annotations


class BudgetNASError(Exception):
    """Base of every error a user can cause with bad input or configuration."""


class UnknownNameError(BudgetNASError, KeyError):
    """A name looked up in a registry (space, backend, runner, method) is not registered."""

    def __init__(self, kind: str, name: str, known: list[str] | tuple[str, ...]) -> None:
        self.kind, self.name, self.known = kind, name, list(known)
        super().__init__(f"unknown {kind} {name!r}; choose one of: {', '.join(self.known)}")

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


class InvalidArchitectureError(BudgetNASError, ValueError):
    """An architecture string or dict is malformed or outside its search space."""


class InvalidBlockKeyError(BudgetNASError, ValueError):
    """A block key does not follow the grammar or names an unknown block type."""


class InvalidArgumentError(BudgetNASError, ValueError):
    """A parameter (resolution, width, batch, budget...) is outside its allowed range."""


class MissingExtraError(BudgetNASError, ImportError):
    """An optional dependency is needed; the message names the pip extra that provides it."""


class MissingKeysError(BudgetNASError, LookupError):
    """A latency prediction needs block keys that the LUT does not hold."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = sorted(set(keys))
        shown = ", ".join(self.keys[:5]) + (f" (+{len(self.keys) - 5} more)" if len(self.keys) > 5 else "")
        super().__init__(f"LUT lacks {len(self.keys)} block key(s): {shown}")

    def __str__(self) -> str:
        return str(self.args[0])


class DataFileError(BudgetNASError, ValueError):
    """A data file (LUT, table, checkpoint, dataset) is missing, unreadable or inconsistent."""


class NotFoundError(BudgetNASError, LookupError):
    """A named record (LUT, device, job, artifact, checkpoint) does not exist."""


class ConflictError(BudgetNASError):
    """The request conflicts with the stored state (a duplicate LUT, a lost lease, a complete LUT)."""


class AuthError(BudgetNASError):
    """No token, or a token that is not valid (HTTP 401)."""


class PermissionDeniedError(BudgetNASError):
    """A valid token that may not do this (an agent token outside its device, HTTP 403)."""


class DeviceUnavailableError(BudgetNASError, RuntimeError):
    """The hardware a runner or backend needs (a CUDA GPU, an execution provider) is not present."""


class ExportError(BudgetNASError, RuntimeError):
    """A model could not be exported, or the exported artifact disagrees with the PyTorch module."""


class ServerError(BudgetNASError):
    """The LUT server could not be reached or refused a client's request (the message has its detail)."""


class ServerUnreachableError(ServerError):
    """The server did not answer (refused connection, timeout) or answered 5xx: the request may be retried as is."""


class ServerRefusedError(ServerError):
    """A final 4xx answer: ``status`` is its HTTP status, ``detail`` the server's reason."""

    def __init__(self, message: str, status: int, detail: str = "") -> None:
        super().__init__(message)
        self.status, self.detail = status, detail


class DatabaseUnavailableError(BudgetNASError):
    """The database named by a URL cannot be opened or reached (a missing directory, a refused connection)."""
