"""Backbones: image -> pooled features. `sizes` names them (no TensorFlow), `scaling` is their input
scaling, `networks` builds them with their weights."""
