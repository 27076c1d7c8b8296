"""PyTorch / open_clip export and import.

`export_open_clip` writes a directory that `open_clip.create_model('local-dir:DIR')`
loads offline (the FDT head and the tokenizer go alongside); `import_open_clip`
reads such a directory, or any open_clip checkpoint of the same shape, back into
the model's parameters. The PyTorch FDT model is in `fdt_jax.export.torch_fdt`,
imported on its own because it needs torch and open_clip (requirements-export.txt).
"""

from fdt_jax.export.open_clip import export_open_clip, read_config
from fdt_jax.formats.open_clip import import_open_clip, parameter_table, read_state_dict

__all__ = ['export_open_clip', 'import_open_clip', 'parameter_table', 'read_config', 'read_state_dict']
