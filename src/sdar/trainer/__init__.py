"""Training: config, the trainer loop, teacher branch, checkpoints, evaluation and the CLI."""
