"""Datasets (the embedded 'shapes', TFDS names), their tokenizer and input pipelines."""

from fdt_jax.data.sources import build_data

__all__ = ['build_data']
