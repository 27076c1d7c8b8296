"""Datasets (the embedded shapes, TFDS names, converted shards), the tokenizer and the
input pipeline. Import the module you need: fdt_jax.data.sources builds what a run reads."""
