"""edgeprune: measure, prune, export and verify neural networks on real edge devices."""

__version__ = "0.1.0"
