"""Benchmarks that notebooks and ``scripts/bench_*.py`` share, kept out of the layer code.

Each measures in one process and reports medians as ratios against a baseline; no test asserts a
wall-clock number.
"""
