"""Evaluation: metrics with CIs, the evaluate and baselines stages, drift, the champion/challenger gate, metric diffs."""
