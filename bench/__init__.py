"""Benchmarks: ``edgefleet bench NAME --json PATH``. They measure; they never assert. Results are JSON
plus a PNG plot, and each figure is a ratio taken within one run, because the machines are noisy."""
