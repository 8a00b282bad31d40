"""nlr_tf: image classifiers from noisy labels plus a small verified set."""

__version__ = "0.1.0"
