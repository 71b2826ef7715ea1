"""Latency-budget planning: what to prune so a model meets a measured latency (or energy) budget."""
