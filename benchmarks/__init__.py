"""Benchmarks: one package per area, each runnable as ``python -m benchmarks.<area>.run`` and
writing its figures into its own section of BENCHMARKS.md."""
