"""chatcli benchmarks: relay throughput and latency, idle memory, CLI start-up.

Run everything with ``python -m bench`` from the repository root; it prints one
JSON document. Each script also runs alone (``python -m bench.relay_load``...).
See the "Benchmark" section of README.md.
"""
