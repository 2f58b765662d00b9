"""Reliability and security: hostile targets against a running sidecar, leaks, load with faults,
bad-input fuzzing, and the checks behind docs/security.md."""
