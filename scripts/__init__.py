"""Benchmark, coverage and data scripts, run as modules from the repository root: `python -m scripts.NAME`.

scripts/common.py (root, machine description, CLI runner, error lines) and scripts/docsection.py
(marked docs sections) are what they share; fixtures shared with the tests are in fixtures/.
"""
