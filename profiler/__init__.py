"""Profiler: PyTorch modules for blocks and whole models, export, runners, measurement protocol, LUTs."""
