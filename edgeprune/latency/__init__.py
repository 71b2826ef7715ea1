"""Latency and energy: end-to-end measurement now; the per-layer lookup table comes with the LUT issue."""
