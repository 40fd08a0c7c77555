"""Profiler: PyTorch modules for blocks and whole models, export, runners, measurement protocol, LUTs.

Public API (device agents measure one block key or one whole model per job with these)::

    from budgetnas.profiler.runners import get_runner, list_runners      # registry: ort-cpu, ort-cuda, torch-cpu,
    runner = get_runner("ort-cpu", threads=1, batch=1)          #   torch-cuda, litert-cpu
    from budgetnas.profiler.protocol import Protocol, measure, measure_many
    stats = measure(runner, "expanded_conv-input:...", Protocol())      # budgetnas.luts.lut.LatencyStats
    from budgetnas.profiler.targets import model_target
    stats = measure(runner, model_target(space, "w1.2_r224|...", runner.batch))
    result = measure_many(runner, keys, Protocol.quick())   # .stats, .overhead, .noisy, .record()
    runner.environment()                                    # machine + runtime record for the result

    from budgetnas.profiler.export import export_onnx, export_tflite, onnx_artifact, tflite_artifact
    from budgetnas.profiler.lutbuild import profile_space   # every block key of a space -> budgetnas.luts.lut.LUT
    from budgetnas.profiler.fidelity import validate        # LUT vs measured whole models

Modules: ``blocks``/``models`` (torch modules from block keys / archs), ``targets`` (what to build
and measure), ``artifacts`` (sha256 content-addressed cache), ``export``, ``runners/``,
``protocol``, ``environment``, ``lutbuild``, ``fidelity``. Each module docstring has the details.
"""
