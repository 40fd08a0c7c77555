"""``budgetnas lut import|export|show``: LUT files offline, or LUTs on the server (``--server``).

Every conversion is ``budgetnas.luts.lut`` (via ``budgetnas.lut_server.convert`` for the import formats).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from budgetnas.cli.server import AsJson, Token, call
from budgetnas.core.errors import InvalidArgumentError

app = typer.Typer(help="Latency LUTs: convert files, upload, download, show.", no_args_is_help=True)

ServerOpt = Annotated[str | None, typer.Option("--server", help="LUT server base URL; without it, work on files")]
SUFFIX_FORMAT = {".yaml": "ofa-yaml", ".yml": "ofa-yaml", ".csv": "arch-csv", ".json": "json"}


def _read(path: Path) -> str:
    from budgetnas.luts.lut import read_text_file

    return read_text_file(path)


def _write_or_echo(text: str, out: Path | None) -> None:
    if out is None:
        typer.echo(text, nl=not text.endswith("\n"))
        return
    from budgetnas.luts.lut import write_atomic

    write_atomic(out, text)
    typer.echo(f"wrote {out}", err=True)


@app.command("import")
def import_cmd(
    file: Annotated[Path, typer.Argument(help="our LUT JSON, Once-for-All YAML, or a CSV of arch + latency")],
    server: ServerOpt = None,
    token: Token = None,
    out: Annotated[Path | None, typer.Option("--out", help="write our LUT JSON here (no --server)")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help="json | ofa-yaml | arch-csv (default: by suffix)")] = None,
    space: Annotated[str | None, typer.Option("--space", help="search space name")] = None,
    width: Annotated[float | None, typer.Option("--width")] = None,
    resolution: Annotated[int | None, typer.Option("--resolution")] = None,
    device: Annotated[str | None, typer.Option("--device")] = None,
    backend: Annotated[str | None, typer.Option("--backend")] = None,
    runtime_version: Annotated[str | None, typer.Option("--runtime-version")] = None,
    column: Annotated[str | None, typer.Option("--column", help="latency column of a CSV")] = None,
) -> None:
    """Upload a LUT file (prints the new LUT id last), or convert it to our JSON with --out."""
    fmt = fmt or SUFFIX_FORMAT.get(file.suffix.lower())
    if fmt is None:
        raise InvalidArgumentError(f"--format: cannot tell the format of {file.name}; give json, ofa-yaml or arch-csv")
    space_desc: dict[str, Any] | None = None
    if space is not None:
        from budgetnas.cli.server import _space

        space_desc = _space(space, width, resolution)
    content = _read(file)
    if server:
        body = {"format": fmt, "content": content, "device": device, "backend": backend, "space": space_desc,
                "resolution": None if space_desc else resolution, "width": None if space_desc else width,
                "column": column, "runtime_version": runtime_version}
        lut = call("POST", server, "/v1/luts/import", token, json={k: v for k, v in body.items() if v is not None})
        typer.echo(f"imported {lut['n_measured']} entries ({100 * lut['coverage']:.1f}% of {lut['n_keys']} keys)")
        typer.echo(str(lut["id"]))
        return
    if out is None:
        raise InvalidArgumentError("--out: give --out FILE to convert, or --server URL --token T to upload")
    from budgetnas.lut_server.convert import ImportOptions, import_lut

    imported = import_lut(fmt, content, ImportOptions(device=device, backend=backend, space=space_desc,
                                                      resolution=resolution, width=width, column=column,
                                                      runtime_version=runtime_version))
    imported.lut.save(out)
    typer.echo(f"wrote {out}: {len(imported.lut.entries)} entries, {imported.lut.meta.space}")


@app.command("export")
def export_cmd(
    lut: Annotated[str, typer.Argument(help="a local LUT JSON file, or a LUT id with --server")],
    fmt: Annotated[str, typer.Option("--format", help="ofa-yaml | json")] = "ofa-yaml",
    out: Annotated[Path | None, typer.Option("--out", help="file to write (default: stdout)")] = None,
    server: ServerOpt = None,
    token: Token = None,
) -> None:
    """Convert a LUT file to Once-for-All YAML (or our JSON), or download one from the server."""
    if fmt not in ("ofa-yaml", "json"):
        raise InvalidArgumentError(f"--format: {fmt!r} is not one of ['ofa-yaml', 'json']")
    if server:
        if not lut.isdigit():
            raise InvalidArgumentError(f"LUT: with --server give a LUT id, not {lut!r}")
        got = call("GET", server, f"/v1/luts/{lut}/export", token, params={"format": fmt})
        _write_or_echo(json.dumps(got, indent=1) if isinstance(got, dict) else str(got), out)
        return
    from budgetnas.luts.lut import LUT

    table = LUT.load(lut)
    _write_or_echo(table.to_ofa_yaml() if fmt == "ofa-yaml" else json.dumps(table.to_json_dict(), indent=1), out)


@app.command("show")
def show_cmd(
    lut_id: Annotated[int, typer.Argument(help="LUT id")],
    server: Annotated[str, typer.Option("--server", help="LUT server base URL")],
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """A LUT's status, coverage, progress, calibration and entries."""
    info = call("GET", server, f"/v1/luts/{lut_id}", token)
    entries = call("GET", server, f"/v1/luts/{lut_id}/entries", token)["entries"]
    rows = [{"key": e["key"], "median_ms": e.get("median_ms"), "mean_ms": e.get("mean_ms"), "cv": e.get("cv"),
             "count": e.get("count")} for e in entries]
    if as_json:
        typer.echo(json.dumps({**info, "entries": rows}))
        return
    m = info["meta"]
    typer.echo(f"LUT {info['id']}  {info['status']}  {m['device']} / {m['backend']}  batch {m['batch']}  "
               f"threads {m['threads']}  runtime {m['runtime_version']}  statistic {m['statistic']}")
    typer.echo(f"space     {m['space']}")
    typer.echo(f"coverage  {info['n_measured']}/{info['n_keys']} ({100 * info['coverage']:.1f}%)  "
               f"jobs {info['progress']}")
    typer.echo(f"calibration {info['calibration']}")
    for r in rows:
        med = "-" if r["median_ms"] is None else f"{r['median_ms']:.4f}"
        cv = "-" if r["cv"] is None else f"{r['cv']:.3f}"
        typer.echo(f"  {med:>10}  {r['mean_ms']:.4f}  cv {cv:>6}  {r['key']}")
