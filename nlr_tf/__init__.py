"""nlr_tf: image classifiers from noisy labels plus a small verified set."""

__version__ = "0.2.0"  # the distribution's one version (setup.py reads it)
