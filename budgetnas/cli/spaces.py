"""``budgetnas spaces ...``: list, sample, keys, describe."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from budgetnas.spaces import SearchSpace, get_space, list_spaces

app = typer.Typer(help="Search spaces: sample architectures, list block keys, describe an architecture.",
                  no_args_is_help=True)

Width = Annotated[float | None, typer.Option("--width", help="ofa-mbv3 width multiplier: 1.0 or 1.2 (default 1.2)")]
Resolution = Annotated[int | None, typer.Option("--resolution", help="input resolution (ofa-mbv3: 128..224 step 4)")]


def space_with(name: str, width: float | None, resolution: int | None) -> SearchSpace[Any]:
    """A space with only the options it understands set (width is ofa-mbv3 only)."""
    params: dict[str, Any] = {"resolution": resolution}
    if width is not None:
        if name != "ofa-mbv3":
            from budgetnas.core.errors import InvalidArgumentError

            raise InvalidArgumentError(f"--width applies to ofa-mbv3 only, not {name}")
        params["width"] = width
    return get_space(name, **params)


@app.command("list")
def list_cmd() -> None:
    """Registered search spaces, with their number of decisions and block keys."""
    for name in list_spaces():
        sp = get_space(name)
        typer.echo(f"{name}\tdecisions={len(sp.decisions)}\tblock_keys={len(sp.all_block_keys())}\t{sp.describe()}")


@app.command("sample")
def sample_cmd(
    space: str,
    n: Annotated[int, typer.Option("-n", "--n", min=1, help="how many architectures")] = 1,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    width: Width = None,
    resolution: Resolution = None,
) -> None:
    """Uniformly sampled architectures, one canonical string per line."""
    sp = space_with(space, width, resolution)
    for arch in sp.sample_many(n, seed):
        typer.echo(sp.format(arch))


@app.command("keys")
def keys_cmd(space: str, width: Width = None, resolution: Resolution = None) -> None:
    """Every block key the space can produce, one per line (sorted)."""
    for key in space_with(space, width, resolution).all_block_keys():
        typer.echo(key)


@app.command("describe")
def describe_cmd(
    space: str,
    arch: str,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """FLOPs (M), params (M) and the block keys with shapes of one architecture."""
    sp = get_space(space)
    a = sp.parse(arch)
    blocks = sp.blocks(a)
    info = {
        "space": space,
        "arch": sp.format(a),
        "flops_m": sp.flops(a) / 1e6,
        "params_m": sp.params(a) / 1e6,
        "block_keys": [b.key_str for b in blocks],
        "blocks": [{"key": b.key_str, "input": list(b.input_shape), "output": list(b.output_shape),
                    "flops_m": b.flops / 1e6, "params_m": b.params / 1e6} for b in blocks],
    }
    if as_json:
        typer.echo(json.dumps(info))
        return
    typer.echo(f"arch      {info['arch']}\nflops     {info['flops_m']:.3f} M\nparams    {info['params_m']:.4f} M")
    typer.echo(f"blocks    {len(blocks)}")
    for b in blocks:
        shape_in = "x".join(map(str, b.input_shape))
        shape_out = "x".join(map(str, b.output_shape))
        typer.echo(f"  {shape_in:>12} -> {shape_out:<12} {b.flops / 1e6:9.3f} MFLOPs  {b.key_str}")
