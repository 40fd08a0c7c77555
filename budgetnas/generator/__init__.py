"""Generator: latency/accuracy oracles, Pareto evaluator, LSTM generator (PNAG), baselines, trainer.

Kept import-free: the torch-free server imports ``budgetnas.generator.bundle``, which runs this file.
"""
