"""Tests for L{smx.split}."""
