"""Structured pruning: exact rewrites, channel groups, importance criteria, depth pruning, replayable plans."""
