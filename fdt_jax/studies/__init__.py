"""Experiments that take hours on a CPU: seed studies and sweeps, resumable, with their
results committed under fdt_jax/studies/results/. Never part of the test suite."""
