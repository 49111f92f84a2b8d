"""What the CLI runs on top of a model: parity checks, benchmarks, the demo, statistics and attention variants."""
