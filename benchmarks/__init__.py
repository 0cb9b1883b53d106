"""Benchmarks and fault drills for the delivery engine (see benchmarks/README.md)."""
