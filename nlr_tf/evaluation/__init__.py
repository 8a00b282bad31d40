"""Evaluation: the papers' metrics, shared by training, nlr-eval and the benchmark."""
