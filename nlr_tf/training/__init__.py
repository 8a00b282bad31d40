"""Training: strategies, optimizers and the training loop."""
