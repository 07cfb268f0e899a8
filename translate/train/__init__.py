"""Training: the loop, its checkpoints and log, the processes of a torchrun job, and
checkpoint averaging."""
