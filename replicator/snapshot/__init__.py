"""Snapshot: backfill existing keys through the same read-and-publish path as live capture."""
