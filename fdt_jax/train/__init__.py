"""Training: the train state (with the EMA teacher), optimizer, step and loop; the workdir,
checkpoints and metrics files are fdt_jax.run's."""
