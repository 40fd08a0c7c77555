"""Small helpers shared by the CLI modules."""

from __future__ import annotations

import json
import sys
from typing import Any

from budgetnas.core.errors import BudgetNASError, InvalidArgumentError

try:  # typer >= 0.20 vendors click as typer._click; older ones use click itself
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - depends on the installed typer
    from click.exceptions import ClickException, NoArgsIsHelpError, UsageError  # type: ignore[assignment,no-redef]

__all__ = ["NoArgsIsHelpError", "json_object_option", "session_line", "tau_text", "user_error"]


def json_object_option(text: str, flag: str) -> dict[str, Any]:
    """Parse a CLI option that takes a JSON object; errors name the flag."""
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(f"{flag}: not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise InvalidArgumentError(f"{flag}: must be a JSON object")
    return parsed


def user_error(exc: BaseException) -> str | None:
    """The one line a user should see for an exception they caused, or None for a bug.

    The CLI's one error path (``budgetnas.cli.main.run``) prints it as ``error: ...`` with exit status 2:
    the project's errors, usage errors (a bad option or value), files that are not UTF-8 text,
    input nested too deeply for Python's parsers, unreadable paths and databases that cannot be
    opened or reached. Everything else is a bug and keeps its traceback.
    """
    if isinstance(exc, BudgetNASError):
        return str(exc)
    if isinstance(exc, UsageError):  # a bad option or value: typer's own "Error:" box otherwise
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        return exc.format_message() + hint
    if isinstance(exc, ClickException):  # e.g. a typer.FileText that cannot be opened
        return exc.format_message()
    if isinstance(exc, UnicodeDecodeError):
        return f"input is not UTF-8 text ({exc.reason} at byte {exc.start})"
    if isinstance(exc, RecursionError):
        return "input is nested too deeply to read"
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    sa_exc = sys.modules.get("sqlalchemy.exc")  # only loaded when a command used a database
    if sa_exc is not None and isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        text = str(getattr(exc, "orig", None) or exc).strip()
        return f"database unavailable: {text.splitlines()[0] if text else type(exc).__name__}"
    return None


def tau_text(tau: float | None, width: int = 0) -> str:
    """Kendall's tau for people: ``n/a`` when it is undefined (either side constant)."""
    return f"{tau:{width}.3f}" if tau is not None else f"{'n/a':>{width}}"


def session_line(sessions: dict[str, Any] | None, disturbed: int = 0) -> str:
    """How the models' session compared with the LUT's (the reference workload), for people."""
    ratio = (sessions or {}).get("session_ratio")
    if ratio is None:
        return "Sessions: not compared (the LUT's or the models' session did not time the reference workload)."
    done = "divided out" if sessions and sessions.get("sessions_corrected") else "not corrected"
    extra = f"; {disturbed} models disturbed by other load" if disturbed else ""
    return f"Sessions: the models' reference workload ran at x{ratio:.3f} the LUT's ({done}){extra}."
