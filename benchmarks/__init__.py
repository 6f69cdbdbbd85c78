"""Benchmarks of napari-nirmpi: each module runs from the repository root as
`python -m benchmarks.NAME` (with the package importable, e.g. installed or PYTHONPATH=src).

Shared pieces: `benchmarks.suite` (the 24 simulated cases and their cached Kaczmarz baselines),
`benchmarks.oracle` (ground-truth scoring: the oracle-tuned Kaczmarz and training scored against
the phantom). Results are written under benchmarks/results/ and summarised in docs/benchmarks.md.
Self-checks of the benchmarks' own design: `python -m benchmarks.suite --check`,
`python -m benchmarks.oracle --check`.
"""
