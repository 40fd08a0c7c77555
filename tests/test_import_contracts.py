"""The import contracts of docs/layout.md: the real tree holds them, and a broken rule is reported."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO
from tools.import_contracts import TABLE_FILE, TableError, check_table, main, parse_table, run


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the real package tree and its table, to break one rule in."""
    shutil.copytree(REPO / "budgetnas", tmp_path / "budgetnas", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "docs").mkdir()
    shutil.copy(REPO / TABLE_FILE, tmp_path / TABLE_FILE)
    return tmp_path


def _table_lines(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| package | owns | may import | torch |"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def test_the_real_tree_holds_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    problems, violations = run(REPO)
    assert (problems, [str(v) for v in violations]) == ([], [])
    assert main(["--root", str(REPO)]) == 0
    assert "holds" in capsys.readouterr().out


def test_the_readme_holds_the_same_table() -> None:
    readme = _table_lines((REPO / "README.md").read_text())
    assert readme == _table_lines((REPO / TABLE_FILE).read_text())
    assert len(parse_table("\n".join(readme))) == len(readme) - 2


@pytest.mark.parametrize(("where", "code", "expected"), [
    ("budgetnas/spaces/bad.py", "from budgetnas.db import repo\n", "budgetnas.spaces may not import budgetnas.db"),
    ("budgetnas/spaces/bad.py", "from ..db import repo\n", "budgetnas.spaces may not import budgetnas.db"),
    ("budgetnas/core/bad.py", "import budgetnas.spaces\n", "budgetnas.core may not import budgetnas.spaces"),
    ("budgetnas/luts/bad.py", "def f():\n    from budgetnas.profiler import models\n",
     "budgetnas.luts may not import budgetnas.profiler"),
    ("budgetnas/lut_server/bad.py", "from budgetnas.generator.pnag import train\n",
     "budgetnas.lut_server may not import budgetnas.generator (imports budgetnas.generator.pnag"),
    ("budgetnas/generator/bundle_extra.py", "import torch\n", None),  # generator proper may use torch
    ("budgetnas/lut_server/bad.py", "def f():\n    import torch.nn\n", "budgetnas.lut_server must never import torch"),
    ("budgetnas/generator/bundle.py", "from budgetnas.generator import pnag\n",
     "budgetnas.generator.bundle may not import budgetnas.generator"),
])
def test_a_forbidden_import_is_reported(tree: Path, capsys: pytest.CaptureFixture[str], where: str, code: str,
                                        expected: str | None) -> None:
    path = tree / where
    path.write_text((path.read_text() if path.exists() else "") + code)
    rc = main(["--root", str(tree)])
    out = capsys.readouterr().out
    if expected is None:
        assert (rc, out.strip()) == (0, "import contracts: docs/layout.md holds")
        return
    assert rc == 1
    assert f"{where}:" in out and expected in out, out


def test_the_package_holding_the_bundle_must_stay_torch_free(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    init = tree / "budgetnas" / "generator" / "__init__.py"
    init.write_text(init.read_text() + "from budgetnas.generator.pnag import train\n")
    assert main(["--root", str(tree)]) == 1
    assert "importing budgetnas.generator.bundle would load what it must never" in capsys.readouterr().out


def test_a_module_outside_the_table_and_an_empty_row_are_reported(tree: Path) -> None:
    text = (tree / TABLE_FILE).read_text()
    (tree / TABLE_FILE).write_text(text.replace("| `budgetnas.db` |", "| `budgetnas.database` |")
                                   .replace("`db`", "`database`"))
    _, violations = run(tree)
    assert "row budgetnas.database holds no module" in {v.message for v in violations}
    # budgetnas/db/* now falls to the root row, which may import only cli
    assert any("budgetnas may not import budgetnas.core" in v.message for v in violations)


def test_the_table_itself_is_checked(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = (tree / TABLE_FILE).read_text()
    spaces_row = next(line for line in table.splitlines() if line.startswith("| `budgetnas.spaces` |"))
    cyclic = table.replace(spaces_row, spaces_row.replace("| `core` |", "| `core`, `luts` |"))
    assert any("arrows run both ways" in p and "budgetnas.luts" in p for p in check_table(parse_table(cyclic)))
    loud = table.replace(spaces_row, spaces_row.replace("| `core` |", "| `core`, `profiler` |"))
    assert "budgetnas.spaces is 'never' torch but may import budgetnas.profiler, which may" in check_table(
        parse_table(loud))
    with pytest.raises(TableError, match=r"unknown budgetnas\.nowhere"):
        parse_table(table.replace(spaces_row, spaces_row.replace("| `core` |", "| `nowhere` |")))
    with pytest.raises(TableError, match="torch must be 'never' or 'may'"):
        parse_table(table.replace(spaces_row, spaces_row.replace("| never |", "| rarely |")))
    with pytest.raises(TableError, match="no table"):
        parse_table("# nothing here\n")
    (tree / TABLE_FILE).unlink()
    assert main(["--root", str(tree)]) == 2
    assert capsys.readouterr().err.startswith("error: no ")
