"""Benchmarks that print progress to stderr and one JSON object as the last line of stdout.

``python -m bench.combine``, ``bench.overhead``, ``bench.convergence``, ``bench.planner``; numbers and
commands are recorded in docs/benchmarks.md. Benchmarks are measurements, never pass/fail tests.
"""
