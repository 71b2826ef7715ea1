"""Structured pruning: exact rewrites, channel groups, importance criteria, depth pruning, replayable plans.

torch-pruning is reached only through tp_adapter.py.
"""
