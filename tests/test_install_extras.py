"""Each deployable runs with only its install extra's distributions importable.

Two views of one rule, "a deployable needs only what its extras bring":
- at run time, a fresh interpreter blocks every installed distribution that is neither the extra's
  (base included) nor required by one of them, then runs the deployable;
- statically, every third-party module imported anywhere in the deployable's packages (lazy imports
  included; which packages is the closure of its row in docs/layout.md's table) comes from those
  distributions.
Neither is a fresh virtualenv (that needs the package index): a declared requirement that cannot
be installed is not seen here.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import subprocess
import sys
import tomllib

import pytest

from tests.conftest import REPO
from tools.import_contracts import TABLE_FILE, imports_of, iter_modules, owner, parse_table

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
NAME = PROJECT["name"]
TOOLS = {"dev", "tflite"}  # extras that are not deployables' runtime
INSTALLER = {"pip", "setuptools", "wheel", NAME}  # and the project itself


def _name(req: str) -> str:
    m = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", req)
    assert m, req
    return re.sub(r"[-_.]+", "-", m.group(0)).lower()


def _declared(extras: set[str]) -> set[str]:
    """Distributions of the base install plus these extras, self-references (``name[x]``) followed."""
    out = {_name(r) for r in PROJECT["dependencies"]}
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for req in PROJECT["optional-dependencies"][extra]:
            if _name(req) == NAME:
                todo += re.search(r"\[(.*)\]", req).group(1).split(",")  # type: ignore[union-attr]
            else:
                out.add(_name(req))
    return out


def _with_requirements(dists: set[str]) -> set[str]:
    """The distributions and, transitively, what their installed metadata requires (no extras)."""
    out, todo = set(), list(dists)
    while todo:
        d = todo.pop()
        if d in out:
            continue
        out.add(d)
        try:
            reqs = md.requires(d) or []
        except md.PackageNotFoundError:
            continue
        todo += [_name(r) for r in reqs if not re.search(r"extra\s*==", r)]
    return out


def _module_dists() -> dict[str, set[str]]:
    return {top: {_name(d) for d in dists} for top, dists in md.packages_distributions().items()}


def blocked_modules(extras: set[str]) -> list[str]:
    """Top-level modules of every installed distribution these extras do not bring."""
    allowed = _with_requirements(_declared(extras)) | INSTALLER
    return sorted(top for top, dists in _module_dists().items() if not dists & allowed and top.isidentifier())


BASE_RUN = ("from budgetnas.cli.main import run\n"
            "assert run(['spaces', 'keys', 'nb201', '--resolution', '16']) == 0\n"
            "import budgetnas.luts.token_cost, budgetnas.generator.bundle\n")
DEPLOYABLES = {
    "base": (set(), BASE_RUN),
    "server": ({"server", "postgres"}, (
        "import sys\n"
        "from budgetnas.cli.main import run\n"
        "assert run(['serve', '--help']) == 0\n"
        "from fastapi.testclient import TestClient\n"
        "from budgetnas.lut_server.app import create_app\n"
        "from budgetnas.lut_server.settings import Settings\n"
        "settings = Settings(db_url='sqlite:///' + sys.argv[1], admin_token='t', migrate_on_start=True)\n"
        "with TestClient(create_app(settings)) as c:\n"
        "    assert c.get('/healthz').status_code == 200\n"
        "    assert c.get('/v1/luts').json() == {'luts': []}, c.get('/v1/luts').text\n")),
    "agent": ({"agent"}, (
        "from budgetnas.cli.main import run\n"
        "assert run(['agent', '--help']) == 0\n"
        "import budgetnas.device_agents.agent, budgetnas.device_agents.backends, budgetnas.device_agents.adb.client\n"
        "from budgetnas.profiler.runners import get_runner\n"
        "get_runner('ort-cpu', threads=1, batch=1)\n")),
    "train": ({"train", "postgres"}, (
        "from budgetnas.cli.main import run\n"
        "assert run(['train', '--help']) == 0\n"
        "import budgetnas.generator.pnag, budgetnas.generator.sources, budgetnas.generator.supernet.train\n")),
}


# the rows of docs/layout.md each deployable runs (with all they may import)
ROWS = {"base": ["budgetnas.luts", "budgetnas.generator.bundle", "budgetnas.spaces"],
        "server": ["budgetnas.lut_server"], "agent": ["budgetnas.device_agents"], "train": ["budgetnas.generator"]}


def test_the_extras_are_declared_as_the_deployables_are() -> None:
    extras = PROJECT["optional-dependencies"]
    assert {"server", "agent", "train", "all"} <= set(extras)
    assert "torch" not in _declared({"server", "postgres"})
    assert _declared({"all"}) == _declared(set(extras) - TOOLS - {"all", "postgres"})  # a driver is a choice
    assert "torch" in blocked_modules({"server"}) and "fastapi" in blocked_modules({"agent"})
    assert "numpy" not in blocked_modules(set()) and "pytest" in blocked_modules(set())


@pytest.mark.parametrize("deployable", sorted(DEPLOYABLES))
def test_every_third_party_import_of_a_deployable_is_in_its_extras(deployable: str) -> None:
    rules = {r.package: r for r in parse_table((REPO / TABLE_FILE).read_text())}
    rows, todo = set(), list(ROWS[deployable])
    while todo:
        row = todo.pop()
        if row not in rows:
            rows.add(row)
            todo += rules[row].may_import
    allowed = _with_requirements(_declared(DEPLOYABLES[deployable][0]))
    modules = dict(iter_modules(REPO))
    dists, missing = _module_dists(), set()
    for module, path in modules.items():
        holder = owner(module, list(rules.values()))
        if holder is None or holder.package not in rows:
            continue
        for target, line in imports_of(ast.parse((REPO / path).read_text()), module, path.name == "__init__.py",
                                       set(modules)):
            top = target.split(".")[0]
            if top in sys.stdlib_module_names or top in ("budgetnas", "__future__"):
                continue
            if not dists.get(top, set()) & allowed:
                missing.add(f"{path}:{line}: {top} ({', '.join(sorted(dists.get(top, {'not installed'})))})")
    assert not missing, "\n".join(sorted(missing))


@pytest.mark.slow
@pytest.mark.parametrize("deployable", sorted(DEPLOYABLES))
def test_a_deployable_runs_with_only_its_extra(deployable: str, tmp_path) -> None:
    extras, code = DEPLOYABLES[deployable]
    prelude = f"import sys\nfor _m in {blocked_modules(extras)!r}:\n    sys.modules[_m] = None\n"
    proc = subprocess.run([sys.executable, "-c", prelude + code, str(tmp_path / "x.db")], capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
