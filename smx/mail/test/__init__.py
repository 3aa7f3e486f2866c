"""Tests for smx.mail."""
