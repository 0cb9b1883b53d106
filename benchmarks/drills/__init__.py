"""Fault drills: the real stack, a fault mid-edition, and the exactly-once check."""
