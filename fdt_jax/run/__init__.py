"""A run's workdir: its config and tokenizer, its checkpoints, its metrics, and restoring
its parameters. Used by the trainer, fdt_jax.evaluate, fdt_jax.export and notebooks.

    config = load_config('runs/tiny')
    model, tokenizer, config, step = load_run('runs/tiny')  # one host, latest checkpoint
"""

from fdt_jax.run.checkpoints import Checkpointer
from fdt_jax.run.metrics import JsonlWriter, create_writer, read_jsonl, trim_metrics
from fdt_jax.run.restore import Run, abstract_params, load_run, restore_params, restore_params_on_host
from fdt_jax.run.workdir import (CONFIG, TOKENIZER, check_config_change, check_writable,
                                 config_changes, load_config, save_run_files, tokenizer_path)

__all__ = ['CONFIG', 'Checkpointer', 'Run', 'JsonlWriter', 'TOKENIZER', 'abstract_params',
           'check_config_change', 'check_writable', 'config_changes', 'create_writer',
           'load_config', 'load_run', 'read_jsonl', 'restore_params', 'restore_params_on_host',
           'save_run_files', 'tokenizer_path', 'trim_metrics']
