"""The ``budgetnas`` console script.

Each package owns one ``cli_*`` module holding a Typer app or commands; this file only mounts
them. Heavy imports (torch, onnxruntime, FastAPI) stay inside command bodies so ``--help`` and
the light commands start fast. Every :class:`BudgetNASError` becomes one line on stderr, exit 2.
"""

from __future__ import annotations

import importlib
import sys

import typer

from budgetnas.errors import BudgetNASError

app = typer.Typer(
    name="budgetnas",
    help="Measure blocks on real hardware, serve latency LUTs, generate architectures for any budget.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# (module, name of the sub-app or None to merge its commands at top level)
_COMMAND_MODULES: list[tuple[str, str | None]] = [
    ("budgetnas.cli_spaces", "spaces"),
    ("budgetnas.cli_server", None),
    ("budgetnas.cli_lut", "lut"),
    ("budgetnas.cli_profile", None),
    ("budgetnas.cli_generator", None),
    ("budgetnas.cli_supernet", "supernet"),
    ("budgetnas.cli_agent", None),
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
    """Run the CLI and return its exit code (used by ``main`` and by tests)."""
    try:
        app(args=argv, prog_name="budgetnas", standalone_mode=False)
    except BudgetNASError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 1
    except typer.TyperException as exc:  # usage errors (bad option values) in non-standalone mode
        show = getattr(exc, "show", None)
        if show is None:
            raise
        show()
        return int(getattr(exc, "exit_code", 2))
    return 0


def main() -> None:
    sys.exit(run(sys.argv[1:]))
