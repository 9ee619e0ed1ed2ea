"""Latency and load benchmarks for a running voxray server (see bench/README.md)."""
