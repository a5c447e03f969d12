"""Benchmark scripts (`python -m cogfm_hf.benchmarks.<name>`): measurements, not tests."""
