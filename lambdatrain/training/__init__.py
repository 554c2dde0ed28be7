"""What a round computes: models, data, the trainer, the flat parameter vector, the reduce, the optimizer step, checkpoints."""
