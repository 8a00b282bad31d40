"""The nlr-* command-line binaries (absl flags; thin wrappers over the library)."""

import ctypes.util
import os


def _has_nvidia_driver() -> bool:
    """Whether this machine has an NVIDIA driver (its kernel module, or the CUDA driver library)."""
    return os.path.exists("/proc/driver/nvidia") or ctypes.util.find_library("cuda") is not None


def _tensorflow_log_level() -> str:
    """TensorFlow's C++ log threshold for the binaries, unless the user set one.

    Info and warnings (CPU features, oneDNN) are not for the user of a
    command-line tool. TensorFlow's CUDA build calls cuInit at start; on a
    machine without an NVIDIA driver that call fails by design and logs an
    error line, so there errors are raised past too (a real failure still
    reaches the user as a Python exception). A machine with a driver keeps
    error lines: its CUDA errors are real.
    """
    return "2" if _has_nvidia_driver() else "3"


if "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = _tensorflow_log_level()
