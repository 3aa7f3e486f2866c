"""Tests of smx.tlspolicy."""
