"""Numerical building blocks that know nothing about models."""

from fdt_jax.ops.hard_negatives import hardest_negatives, sample_hard_negatives
from fdt_jax.ops.sparsemax import normalize_scores, sparsemax

__all__ = ['hardest_negatives', 'normalize_scores', 'sample_hard_negatives', 'sparsemax']
