"""Workloads defined outside batchlaw, as a user's package would define them (used by the tests)."""
