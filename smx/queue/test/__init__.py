"""Tests for smx.queue."""
