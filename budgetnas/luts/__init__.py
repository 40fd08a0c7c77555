"""Latency LUTs: file format, stats and calibration, the vectorised cost model, OFA YAML import, transfer."""
