"""Benchmarks of this repository's way against the seed repository's way (issue 7).

Run one with ``python -m benchmarks.<name> [--quick]``; each prints its measurements and, last,
a line ``ratio: ...`` comparing the two on the same inputs in the same process.
"""
