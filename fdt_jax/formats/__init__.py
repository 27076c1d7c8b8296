"""Other libraries' weight formats, below both the trainer (config.model.init_from) and
fdt_jax.export: open_clip's state_dict names and layouts."""
