"""Export to ONNX/TFLite (checked against torch) and the content-addressed artifact cache."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from budgetnas.core.errors import ExportError, InvalidArgumentError, MissingExtraError
from budgetnas.profiler.artifacts import ArtifactCache
from budgetnas.profiler.export import OPSET, check_close, export_onnx, onnx_artifact, tflite_artifact, tflite_op_names
from budgetnas.profiler.targets import block_target, model_target
from budgetnas.spaces import get_space

MB_KEY = "expanded_conv-input:16x16x48-output:16x16x48-expand:144-kernel:3-stride:1-idskip:1-se:1-hs:1"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArtifactCache]:
    yield ArtifactCache(tmp_path_factory.getbasetemp() / "bn-cache")


def test_dynamo_export_pins_opset_and_matches_torch(tmp_path: Path) -> None:
    t = block_target(MB_KEY)
    path = export_onnx(t.build(), t.example(), tmp_path / "b.onnx")  # default exporter: dynamo, checked
    model = onnx.load(str(path))
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {OPSET}
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: t.example().numpy()})[0]
    with torch.inference_mode():
        want = t.build()(t.example()).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)


def test_cache_is_content_addressed_and_reused(cache: ArtifactCache) -> None:
    t = block_target("nor_conv_3x3-input:16x16x16-output:16x16x16")
    first = onnx_artifact(t, cache, exporter="torchscript")
    again = onnx_artifact(t, cache, exporter="torchscript")
    assert again.cached and again.path == first.path
    assert first.sha256 == hashlib.sha256(first.path.read_bytes()).hexdigest()
    assert first.path.name == f"{first.sha256}.onnx"
    other = onnx_artifact(block_target("nor_conv_3x3-input:16x16x16-output:16x16x16", batch=2), cache,
                          exporter="torchscript")
    assert other.sha256 != first.sha256  # batch is part of the recipe


def test_whole_model_export_matches_torch(tmp_path: Path) -> None:
    sp = get_space("nb201", channels=8, cells=1, resolution=16)
    # a cache of its own: the session's shared one may hold this model already (other tests measure it)
    art = onnx_artifact(model_target(sp, sp.sample_many(1, 3)[0]), ArtifactCache(tmp_path), exporter="torchscript")
    assert art.path.stat().st_size > 0 and not art.cached


def test_a_changed_walk_is_a_new_model_artifact(cache: ArtifactCache, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model is what its space's walk says (nb201's live edges live in budgetnas/spaces/nb201.py, not in the
    builders): editing the walk must not reuse a model exported before the edit."""
    import budgetnas.profiler.targets

    sp = get_space("nb201", channels=8, cells=1, resolution=16)
    arch = sp.parse("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|")
    first = onnx_artifact(model_target(sp, arch), cache, exporter="torchscript")
    assert onnx_artifact(model_target(sp, arch), cache, exporter="torchscript").cached
    monkeypatch.setattr(budgetnas.profiler.targets, "walk_digest", lambda space_type: "edited")
    again = onnx_artifact(model_target(sp, arch), cache, exporter="torchscript")
    assert not again.cached and again.path.exists() and first.path.exists()


def test_check_close_rejects_mismatch() -> None:
    ref = np.ones((2, 3), np.float32)
    check_close(ref + 1e-6, ref, "ok")
    with pytest.raises(ExportError, match="differs"):
        check_close(ref * 1.1, ref, "bad")
    with pytest.raises(ExportError, match="shape"):
        check_close(ref[:1], ref, "bad")


def test_unknown_exporter(tmp_path: Path) -> None:
    t = block_target(MB_KEY)
    with pytest.raises(InvalidArgumentError, match="exporter"):
        export_onnx(t.build(), t.example(), tmp_path / "x.onnx", exporter="nope")


def test_tflite_without_litert_torch_is_missing_extra(cache: ArtifactCache, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # as if the extra were not installed
    with pytest.raises(MissingExtraError, match=r"budgetnas\[tflite\]"):
        tflite_artifact(block_target(MB_KEY), cache)


@pytest.mark.parametrize("key", [
    MB_KEY,
    "AvgPool2D-input:4x4x1152-output:1x1x1152",  # a lone mean over H, W converts with a TRANSPOSE unless rewritten
    "head-input:8x8x64-output:10",
    "Conv-input:128x128x3-output:64x64x24",
])
def test_tflite_is_nhwc_without_transpose(key: str, cache: ArtifactCache) -> None:
    pytest.importorskip("litert_torch")
    from ai_edge_litert.interpreter import Interpreter

    t = block_target(key)
    art = tflite_artifact(t, cache)  # built with an output check against torch
    ops = tflite_op_names(art.path)
    assert ops and "TRANSPOSE" not in ops
    it = Interpreter(model_path=str(art.path))
    n, c, h, w = t.input_shape
    assert list(it.get_input_details()[0]["shape"]) == [n, h, w, c]
