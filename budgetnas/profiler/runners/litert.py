"""LiteRT (TFLite) runner ``litert-cpu``: ai-edge-litert's Interpreter (XNNPACK) on NHWC models.

Models are converted with litert-torch (the ``tflite`` extra); without it the runner cannot be
constructed (MissingExtraError). The input tensor is set once; a timed call is one ``invoke()``.
"""

from __future__ import annotations

from budgetnas.core.errors import MissingExtraError
from budgetnas.profiler.environment import package_version
from budgetnas.profiler.export import has_module, require_litert_torch, tflite_artifact, to_nhwc
from budgetnas.profiler.runners.base import Prepared, Runner
from budgetnas.profiler.targets import Target


class LiteRTCpuRunner(Runner):
    name = "litert-cpu"

    def check_available(self) -> None:
        if not has_module("ai_edge_litert"):
            raise MissingExtraError("litert-cpu needs ai-edge-litert: pip install ai-edge-litert")
        require_litert_torch()

    def runtime_version(self) -> str:
        return f"ai-edge-litert {package_version('ai-edge-litert')}"

    def load(self, target: Target) -> Prepared:
        from ai_edge_litert.interpreter import Interpreter

        art = tflite_artifact(target, self.cache)
        it = Interpreter(model_path=str(art.path), num_threads=self.threads)
        it.allocate_tensors()
        x = to_nhwc(target.example()).numpy()
        it.set_tensor(it.get_input_details()[0]["index"], x)
        return Prepared(target.name, it.invoke, art, keep=[it, x])
