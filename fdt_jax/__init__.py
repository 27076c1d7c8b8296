"""fdt_jax: CLIP-style image-text models with Finite Discrete Tokens, in JAX/Flax."""

__version__ = '0.1.0'
