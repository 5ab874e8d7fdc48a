"""Benchmark suite: every pydet_ops op against torchvision.ops in the same process (``python -m benchmarks``)."""
