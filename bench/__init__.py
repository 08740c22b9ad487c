"""Benchmarks: each runs Conveyor and the peers it names in one run and prints ratios."""
