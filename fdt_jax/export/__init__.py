"""PyTorch / open_clip export and import.

`export_open_clip` writes a directory that `open_clip.create_model('local-dir:DIR')`
loads offline (the FDT head and the tokenizer go alongside); `import_open_clip`
reads such a directory, or any open_clip checkpoint of the same shape, back into
the model's parameters. The PyTorch FDT model is `fdt_jax.export.torch_fdt`: it
needs torch and open_clip (`pip install -e .[torch]`) and imports no JAX, so this
package imports its JAX side only when one of the names below is used.
"""

__all__ = ['export_open_clip', 'import_open_clip', 'parameter_table', 'read_config', 'read_state_dict']


def __getattr__(name):
  if name in ('export_open_clip', 'read_config'):
    from fdt_jax.export import open_clip
    return getattr(open_clip, name)
  if name in ('import_open_clip', 'parameter_table', 'read_state_dict'):
    from fdt_jax.formats import open_clip
    return getattr(open_clip, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
