"""Scale-out: multi-node jobs through submitit (Slurm or this machine) and Ray Tune sweeps.

Nothing here imports submitit or ray at module import: the GPU images may lack them, and
training must import without them.
"""
