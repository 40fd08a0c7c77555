"""Import contracts: the package table of ``docs/layout.md`` checked against the real imports.

The table is the one source of truth: each row names a package (``budgetnas.X``), what it may import
(short names of other rows, ``nothing`` or ``everything``) and whether torch may be loaded by it.
A module belongs to the row with the longest matching name, so ``budgetnas.generator.bundle`` is its
own row inside ``budgetnas.generator``. Checked, by parsing (nothing is imported):

- every project import (absolute or relative, ``TYPE_CHECKING`` blocks included) of a module goes to its
  own row or to a row its row may import;
- a row marked ``never`` for torch imports no ``torch`` module, and may import only rows marked ``never``
  (so "never torch" holds for everything it loads, not only for its own files);
- the table itself: names that exist, no row left without modules, arrows that run one way (no cycle).

    python tools/import_contracts.py [--root DIR]     # exit 0 clean, 1 with violations, 2 bad table
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT_PACKAGE = "budgetnas"
TABLE_FILE = Path("docs") / "layout.md"
NOTHING, EVERYTHING = "nothing", "everything"
TORCH_NEVER, TORCH_MAY = "never", "may"


class TableError(ValueError):
    """docs/layout.md's table is missing or malformed."""


@dataclass(frozen=True)
class Rule:
    package: str  # dotted, e.g. budgetnas.generator.bundle
    may_import: frozenset[str]  # dotted package names of other rows
    torch: bool  # may torch be imported by it (directly or through what it may import)


@dataclass(frozen=True)
class Violation:
    path: Path  # relative to the repository root
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _names(cell: str) -> list[str]:
    return re.findall(r"`([\w.]+)`", cell)


def _full(name: str, root: str) -> str:
    """`luts` -> budgetnas.luts (rows may be named short or in full)."""
    return name if name == root or name.startswith(root + ".") else f"{root}.{name}"


def parse_table(text: str, root: str = ROOT_PACKAGE) -> list[Rule]:
    """The rows of the first Markdown table whose header is ``package | owns | may import | torch``."""
    lines = text.splitlines()
    header = ["package", "owns", "may import", "torch"]
    i = next((n for n, line in enumerate(lines)
              if line.lstrip().startswith("|") and [c.lower() for c in _cells(line)] == header), None)
    if i is None:
        raise TableError("no table with the header | package | owns | may import | torch |")
    raw: list[tuple[str, str, str, int]] = []
    for n, line in enumerate(lines[i + 2:], start=i + 3):
        if not line.lstrip().startswith("|"):
            break
        cells = _cells(line)
        if len(cells) != 4:
            raise TableError(f"table line {n}: {len(cells)} cells, expected 4")
        named = _names(cells[0])
        if len(named) != 1 or not (named[0] == root or named[0].startswith(root + ".")):
            raise TableError(f"table line {n}: the package cell must name one `{root}...` package, got {cells[0]!r}")
        raw.append((named[0], cells[2], cells[3].lower(), n))
    packages = [p for p, *_ in raw]
    if len(set(packages)) != len(packages):
        raise TableError(f"a package has several rows: {sorted({p for p in packages if packages.count(p) > 1})}")
    rules = []
    for pkg, allowed, torch, n in raw:
        if allowed.strip().lower() == EVERYTHING:  # every row below it: all but those that may import it
            targets = frozenset(p for p, other, *_ in raw if p != pkg and other.strip().lower() != EVERYTHING
                                and pkg not in {_full(t, root) for t in _names(other)})
        elif allowed.strip().lower() == NOTHING:
            targets = frozenset()
        else:
            targets = frozenset(_full(t, root) for t in _names(allowed))
            unknown = sorted(targets - set(packages))
            if unknown or not targets:
                raise TableError(f"table line {n}: may import {allowed!r}: "
                                 f"{'unknown ' + ', '.join(unknown) if unknown else 'no `name`'} "
                                 f"(give `names` of rows, {NOTHING!r} or {EVERYTHING!r})")
        if torch.split()[0:1] not in ([TORCH_NEVER], [TORCH_MAY]):
            raise TableError(f"table line {n}: torch must be {TORCH_NEVER!r} or {TORCH_MAY!r}, got {torch!r}")
        rules.append(Rule(pkg, targets, torch.split()[0] == TORCH_MAY))
    return rules


def check_table(rules: list[Rule]) -> list[str]:
    """The table's own consistency: one-way arrows, and "never torch" closed under what it may import."""
    by_name = {r.package: r for r in rules}
    problems = []
    for r in rules:
        if not r.torch:
            loud = sorted(t for t in r.may_import if by_name[t].torch)
            if loud:
                problems.append(f"{r.package} is 'never' torch but may import {', '.join(loud)}, which may")
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for t in sorted(by_name[name].may_import):
            if state.get(t) == 1:
                problems.append("arrows run both ways: " + " -> ".join([*path[path.index(t):], t]))
            elif t not in state:
                visit(t, [*path, t])
        state[name] = 2

    for r in rules:
        if r.package not in state:
            visit(r.package, [r.package])
    return problems


def module_name(path: Path, src_root: Path) -> str:
    parts = list(path.relative_to(src_root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def iter_modules(src_root: Path, root: str = ROOT_PACKAGE) -> Iterator[tuple[str, Path]]:
    """(dotted name, path relative to ``src_root``) of every module of the package."""
    for path in sorted((src_root / root).rglob("*.py")):
        yield module_name(path, src_root), path.relative_to(src_root)


def imports_of(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import statement in the tree, relative ones resolved."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{target}.{alias.name}"
                yield (sub if sub in known else target), node.lineno


def owner(module: str, rules: list[Rule]) -> Rule | None:
    best = None
    for r in rules:
        if (module == r.package or module.startswith(r.package + ".")) and (
                best is None or len(r.package) > len(best.package)):
            best = r
    return best


def check(src_root: Path, rules: list[Rule], root: str = ROOT_PACKAGE) -> list[Violation]:
    modules = dict(iter_modules(src_root, root))
    known = set(modules)
    out: list[Violation] = []
    used: set[str] = set()
    for module, path in modules.items():
        src = owner(module, rules)
        if src is None:
            out.append(Violation(path, 1, f"{module} belongs to no row of {TABLE_FILE}"))
            continue
        used.add(src.package)
        tree = ast.parse((src_root / path).read_text(), filename=str(path))
        for target, line in imports_of(tree, module, path.name == "__init__.py", known):
            top = target.split(".")[0]
            if top == "torch" and not src.torch:
                out.append(Violation(path, line, f"{src.package} must never import torch (imports {target})"))
            if top != root:
                continue
            dst = owner(target, rules)
            if dst is None or dst is src:
                continue
            if dst.package not in src.may_import:
                out.append(Violation(path, line, f"{src.package} may not import {dst.package} (imports {target}; "
                                                 f"see {TABLE_FILE})"))
    out += _parent_inits(src_root, modules, rules, known)
    for r in rules:
        if r.package not in used:
            out.append(Violation(TABLE_FILE, 1, f"row {r.package} holds no module"))
    return out


def _parent_inits(src_root: Path, modules: dict[str, Path], rules: list[Rule], known: set[str]) -> list[Violation]:
    """Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` too: where a 'never' torch row sits
    inside a row that may (``generator.bundle`` in ``generator``), those ``__init__`` modules may
    import neither torch nor a row that may."""
    out = []
    for r in rules:
        if r.torch:
            continue
        parts = r.package.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            holder = owner(parent, rules)
            if parent not in modules or holder is None or not holder.torch:
                continue
            path = modules[parent]
            for target, line in imports_of(ast.parse((src_root / path).read_text()), parent, True, known):
                dst = owner(target, rules)
                if target.split(".")[0] == "torch" or (dst is not None and dst is not r and dst.torch):
                    out.append(Violation(path, line, f"{parent} (the package {r.package} sits in) imports {target}, "
                                                     f"so importing {r.package} would load what it must never"))
    return out


def run(repo: Path) -> tuple[list[str], list[Violation]]:
    """(table problems, import violations) of the repository at ``repo``."""
    table = repo / TABLE_FILE
    if not table.is_file():
        raise TableError(f"no {table}")
    rules = parse_table(table.read_text())
    return check_table(rules), check(repo, rules)


def main(argv: Iterable[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1], help="repository root")
    args = p.parse_args(list(argv) if argv is not None else None)
    try:
        problems, violations = run(args.root)
    except (TableError, OSError, SyntaxError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in [*problems, *map(str, violations)]:
        print(line)
    if problems or violations:
        print(f"{len(problems) + len(violations)} import contract violation(s)", file=sys.stderr)
        return 1
    print(f"import contracts: {TABLE_FILE} holds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
