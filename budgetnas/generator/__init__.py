"""Generator: latency/accuracy oracles, Pareto evaluator, LSTM generator (PNAG), baselines, trainer."""
