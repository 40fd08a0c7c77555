"""The ``budgetnas`` console script.

Each command group is one module of ``budgetnas.cli`` holding a Typer app or commands; this file
only mounts them. Heavy imports (torch, onnxruntime, FastAPI) stay inside command bodies so ``--help`` and
the light commands start fast. Every error the user can cause becomes one ``error:`` line on
stderr and exit status 2 (``run``).
"""

from __future__ import annotations

import importlib
import sys

import typer

from budgetnas.cli.util import NoArgsIsHelpError, user_error

app = typer.Typer(
    name="budgetnas",
    help="Measure blocks on real hardware, serve latency LUTs, generate architectures for any budget.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# (module, name of the sub-app or None to merge its commands at top level)
_COMMAND_MODULES: list[tuple[str, str | None]] = [
    ("budgetnas.cli.spaces", "spaces"),
    ("budgetnas.cli.server", None),
    ("budgetnas.cli.transfer", None),  # mounts `device adapt` on cli.server's device group
    ("budgetnas.cli.lut", "lut"),
    ("budgetnas.cli.profile", None),
    ("budgetnas.cli.generator", None),
    ("budgetnas.cli.supernet", "supernet"),
    ("budgetnas.cli.agent", None),
]


def _mount() -> None:
    for module_name, group in _COMMAND_MODULES:
        module = importlib.import_module(module_name)
        sub: typer.Typer = module.app
        if group:
            app.add_typer(sub, name=group)
        else:
            for cmd in sub.registered_commands:
                app.registered_commands.append(cmd)
            for grp in sub.registered_groups:
                app.registered_groups.append(grp)


_mount()


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (used by ``main`` and by tests).

    The one error path: whatever the user caused (``budgetnas.cli.util.user_error``) is one ``error: ...``
    line on stderr and exit status 2; anything else is a bug and keeps its traceback.
    """
    try:
        app(args=argv, prog_name="budgetnas", standalone_mode=False)
    except typer.Exit as exc:  # --help, --version, a command's own exit code
        return int(exc.exit_code or 0)
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 1
    except NoArgsIsHelpError as exc:  # a group called without a command: its help, as a usage error
        exc.show()
        return 2
    except Exception as exc:
        message = user_error(exc)
        if message is None:
            raise
        typer.echo(f"error: {message}", err=True)
        return 2
    return 0


def main() -> None:
    sys.exit(run(sys.argv[1:]))
