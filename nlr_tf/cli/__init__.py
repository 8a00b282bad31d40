"""The nlr-* command-line binaries (absl flags; thin wrappers over the library)."""

import os

# TensorFlow's C++ start-up chatter (CPU features, missing CUDA) is not for
# the user of a command-line tool; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
