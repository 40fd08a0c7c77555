"""Export PyTorch modules to ONNX and TFLite, checked against PyTorch, cached by content.

Plain exports (write one file)::

    export_onnx(module, example, path, opset=OPSET, exporter="dynamo")   # checks ORT output == torch
    export_tflite(module, example, path)   # channels-last (NHWC) inputs/outputs; needs litert-torch

Cached exports of a :class:`budgetnas.profiler.targets.Target` (``block_target``/``model_target``)::

    onnx_artifact(target, cache=None, exporter="dynamo") -> Artifact   # .path, .sha256
    tflite_artifact(target, cache=None) -> Artifact

Artifacts live in :class:`budgetnas.profiler.artifacts.ArtifactCache` (content-addressed by sha256); the
check against PyTorch runs once, when the artifact is built. ``exporter`` is ``dynamo`` (the
torch.export-based default of torch 2.13, needs onnxscript) or ``torchscript`` (the legacy
exporter, ~10x faster to export, same opset); blocks and whole models compared against each other
must use the same one. TFLite conversion uses ``litert-torch`` (the ``tflite`` extra): without it
:class:`MissingExtraError`. The TFLite graph takes NHWC input so it holds no layout TRANSPOSE
ops; global average pools are rewritten as ``avg_pool2d`` for that (a lone ``mean`` over H, W is
otherwise converted with a TRANSPOSE). ``tflite_op_names(path)`` lists a model's operators.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import io
import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from budgetnas.core.errors import ExportError, InvalidArgumentError, MissingExtraError
from budgetnas.profiler.artifacts import Artifact, ArtifactCache
from budgetnas.profiler.targets import Target

OPSET = 18
EXPORTERS = ("dynamo", "torchscript")
RTOL = 1e-3  # max |exported - torch| relative to max |torch|; float32 kernels differ in accumulation order


def has_module(name: str) -> bool:
    """Importable without importing it (a ``None`` entry in sys.modules means blocked)."""
    if name in sys.modules:
        return sys.modules[name] is not None
    return importlib.util.find_spec(name) is not None


def require_litert_torch() -> Any:
    if not has_module("litert_torch"):
        raise MissingExtraError("TFLite export needs litert-torch: pip install 'budgetnas[tflite]'")
    with _quiet():
        return importlib.import_module("litert_torch")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Exporters print progress to stdout; keep stdout clean for `--json` output."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        level = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(level)


def check_close(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    if got.shape != ref.shape:
        raise ExportError(f"{what}: output shape {got.shape} differs from torch's {ref.shape}")
    scale = max(float(np.abs(ref).max()), 1e-6)
    err = float(np.abs(got - ref).max()) / scale
    if not np.isfinite(err) or err > RTOL:
        raise ExportError(f"{what}: output differs from torch by {err:.2e} (relative to max |output|)")


def _torch_out(module: nn.Module, example: torch.Tensor) -> np.ndarray:
    with torch.inference_mode():
        return module(example).detach().cpu().numpy()


# ---- ONNX --------------------------------------------------------------------------------------
def export_onnx(module: nn.Module, example: torch.Tensor, path: str | Path, opset: int = OPSET,
                exporter: str = "dynamo", check: bool = True) -> Path:
    """Write ``module`` as ONNX (static shapes of ``example``, pinned opset); verify with ORT on CPU."""
    if exporter not in EXPORTERS:
        raise InvalidArgumentError(f"exporter {exporter!r} is not one of {list(EXPORTERS)}")
    p = Path(path)
    module = module.eval()
    try:
        with _quiet(), torch.inference_mode(False), torch.no_grad():
            if exporter == "dynamo":
                torch.onnx.export(module, (example,), str(p), dynamo=True, opset_version=opset,
                                  input_names=["input"], output_names=["output"], external_data=False)
            else:
                torch.onnx.export(module, (example,), str(p), dynamo=False, opset_version=opset,
                                  input_names=["input"], output_names=["output"])
    except Exception as exc:  # exporters raise many types; the message is what matters
        raise ExportError(f"ONNX export of {type(module).__name__} failed: {str(exc).splitlines()[0]}") from exc
    if check:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: example.numpy()})[0]
        check_close(np.asarray(got), _torch_out(module, example), f"ONNX ({exporter}) of {type(module).__name__}")
    return p


def onnx_artifact(target: Target, cache: ArtifactCache | None = None, exporter: str = "dynamo",
                  opset: int = OPSET) -> Artifact:
    recipe = {**target.recipe, "format": "onnx", "opset": opset, "exporter": exporter,
              "torch": torch.__version__, "layout": "nchw"}
    return (cache or ArtifactCache()).get_or_create(
        recipe, "onnx", lambda tmp: export_onnx(target.build(), target.example(), tmp, opset, exporter))


# ---- TFLite ------------------------------------------------------------------------------------
class _PoolAsAvgPool2d(nn.Module):
    """Global average pool as one AVERAGE_POOL_2D (NHWC-native), same result as mean over H, W."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, (int(x.shape[2]), int(x.shape[3])))


def _nhwc_friendly(module: nn.Module) -> nn.Module:
    from budgetnas.profiler.blocks import GlobalAvgPool

    swap: dict[type, Callable[[], nn.Module]] = {GlobalAvgPool: _PoolAsAvgPool2d}
    if type(module) in swap:
        return swap[type(module)]()
    module = copy.deepcopy(module)
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) in swap:
                setattr(parent, name, swap[type(child)]())
    return module


def to_nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1).contiguous() if x.dim() == 4 else x


def export_tflite(module: nn.Module, example: torch.Tensor, path: str | Path, check: bool = True) -> Path:
    """Write ``module`` as TFLite with NHWC input (and NHWC output where it is 4-D)."""
    lt = require_litert_torch()
    p = Path(path)
    module = _nhwc_friendly(module.eval())
    ref = _torch_out(module, example)
    try:
        with _quiet():
            wrapped = lt.to_channel_last_io(module, args=[0] if example.dim() == 4 else [],
                                            outputs=[0] if ref.ndim == 4 else [])
            lt.convert(wrapped, (to_nhwc(example),)).export(str(p))
    except Exception as exc:
        raise ExportError(f"TFLite export of {type(module).__name__} failed: {str(exc).splitlines()[0]}") from exc
    if check:
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=str(p), num_threads=1)
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], to_nhwc(example).numpy())
        it.invoke()
        got = it.get_tensor(it.get_output_details()[0]["index"])
        want = ref.transpose(0, 2, 3, 1) if ref.ndim == 4 else ref
        check_close(np.asarray(got), np.ascontiguousarray(want), f"TFLite of {type(module).__name__}")
    return p


def tflite_artifact(target: Target, cache: ArtifactCache | None = None) -> Artifact:
    recipe = {**target.recipe, "format": "tflite", "torch": torch.__version__, "layout": "nhwc",
              "litert_torch": _version("litert-torch")}
    require_litert_torch()
    return (cache or ArtifactCache()).get_or_create(
        recipe, "tflite", lambda tmp: export_tflite(target.build(), target.example(), tmp))


def tflite_op_names(path: str | Path) -> list[str]:
    """Operator names of the first subgraph of a .tflite file, in order."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAsModel(Path(path).read_bytes(), 0)
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        codes.append(max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode()))
    g = model.Subgraphs(0)
    return [names.get(codes[g.Operators(i).OpcodeIndex()], "CUSTOM") for i in range(g.OperatorsLength())]


def _version(dist: str) -> str | None:
    from budgetnas.profiler.environment import package_version

    return package_version(dist)
