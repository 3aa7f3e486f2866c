"""
Tests for L{smx.pmilter}.
"""
