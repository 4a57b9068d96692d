"""Capture: keyspace notifications → atomic state reads → versioned ChangeEvents."""
