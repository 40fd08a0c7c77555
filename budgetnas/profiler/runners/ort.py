"""ONNX Runtime runners: ``ort-cpu`` and ``ort-cuda``.

Inputs and outputs are bound once with IOBinding (pre-allocated outputs), so a timed call is one
``run_with_iobinding`` with no tensor copies or allocations: the per-call overhead left is the
runtime's own, which the trivial graph measures.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from budgetnas.core.errors import DeviceUnavailableError
from budgetnas.profiler.export import onnx_artifact
from budgetnas.profiler.runners.base import Prepared, Runner
from budgetnas.profiler.targets import Target


class OrtCpuRunner(Runner):
    name = "ort-cpu"
    provider: ClassVar[str] = "CPUExecutionProvider"
    device: ClassVar[str] = "cpu"

    def runtime_version(self) -> str:
        import onnxruntime as ort

        return f"onnxruntime {ort.__version__}"

    def session_options(self) -> Any:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        return so

    def load(self, target: Target) -> Prepared:
        import onnxruntime as ort

        art = onnx_artifact(target, self.cache, self.exporter)
        sess = ort.InferenceSession(str(art.path), self.session_options(), providers=[self.provider])
        x = np.ascontiguousarray(target.example().numpy())
        io = sess.io_binding()
        inp = ort.OrtValue.ortvalue_from_numpy(x, self.device, 0)
        io.bind_ortvalue_input(sess.get_inputs()[0].name, inp)
        outs = []
        for o in sess.get_outputs():
            val = ort.OrtValue.ortvalue_from_shape_and_type(o.shape, np.float32, self.device, 0)
            io.bind_ortvalue_output(o.name, val)
            outs.append(val)
        run = sess.run_with_iobinding
        return Prepared(target.name, lambda: run(io), art, keep=[sess, io, inp, outs, x])


class OrtCudaRunner(OrtCpuRunner):
    name = "ort-cuda"
    provider = "CUDAExecutionProvider"
    device = "cuda"
    default_batch = 64

    def check_available(self) -> None:
        import onnxruntime as ort

        if self.provider not in ort.get_available_providers():
            raise DeviceUnavailableError(
                "ort-cuda needs onnxruntime-gpu with a CUDA GPU; this onnxruntime offers only "
                f"{', '.join(ort.get_available_providers())}")

    def device_info(self) -> dict[str, Any]:
        from budgetnas.profiler.runners.torch_rt import gpu_info

        return gpu_info()
