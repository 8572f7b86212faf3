"""Training and evaluation: a DeepSpeed engine, one step-based loop, checkpoints, the CPU demo.

``run.run_training(cfg)`` is the whole job as one rank; ``preempt`` turns signals into a checkpoint.
"""
