"""Numerical building blocks that know nothing about models."""

from fdt_jax.ops.hard_negatives import hardest_negatives, sample_hard_negatives
from fdt_jax.ops.max_pool import max_pooled_scores
from fdt_jax.ops.sparsemax import normalize_scores, sparsemax

__all__ = ['hardest_negatives', 'max_pooled_scores', 'normalize_scores', 'sample_hard_negatives',
           'sparsemax']
