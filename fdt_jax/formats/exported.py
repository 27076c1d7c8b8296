"""The files of a directory written by fdt_jax.export (their names only).

Imports nothing, so that the PyTorch side (fdt_jax.export.torch_fdt) reads an exported
directory without JAX.
"""

OPEN_CLIP_CONFIG = 'open_clip_config.json'  # open_clip's model_cfg and preprocess_cfg
OPEN_CLIP_WEIGHTS = 'open_clip_model.safetensors'  # the towers, under open_clip's names
FDT_CONFIG = 'fdt_config.json'  # FDT models only: the head's settings
FDT_WEIGHTS = 'fdt_head.safetensors'  # FDT models only: fdt_tokens, query_image, query_text
TOKENIZER = 'tokenizer.model'  # the sentencepiece model the run was trained with
MAMO_CONFIG = 'mamo_config.json'  # 'mamo' models only: torch_mamo.MAMOFusion's settings
MAMO_WEIGHTS = 'mamo_fusion.safetensors'  # 'mamo' models only: fusion encoder, heads, mask embeddings
MVPTR_CONFIG = 'mvptr_config.json'  # 'mvptr' models only: torch_mvptr.MVPTRHead's settings
MVPTR_WEIGHTS = 'mvptr_head.safetensors'  # 'mvptr' models only: visual encoder, fusion, heads
