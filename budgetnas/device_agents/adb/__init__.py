"""Phones over adb: the client, the benchmark_model runner and its output parsers."""
