"""Verification: does the exported artifact, on its runtime, still compute the model?"""
