"""Tests for smx.scripts."""
