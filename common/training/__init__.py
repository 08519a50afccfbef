"""The training loop, checkpoints, data-parallel launch, the monitor and plots, the command lines."""
