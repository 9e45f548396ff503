"""Prequential evaluation: datasets, the test-then-train harness, metrics and reports."""
