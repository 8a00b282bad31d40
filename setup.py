"""Installs the `nlr_tf` library, the `tfrecords_tools` converters and the nlr-* binaries."""

import re

import setuptools

with open("nlr_tf/__init__.py") as f:
    VERSION = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)

setuptools.setup(
    name="nlr_tf",
    version=VERSION,
    description=(
        "Learning image classifiers from massive noisily labeled data plus a "
        "small verified subset: label cleaning (Veit et al. 2017) and noise "
        "regularization (Hu et al. 2019) in TensorFlow/Keras."
    ),
    packages=setuptools.find_packages(include=["nlr_tf", "nlr_tf.*", "tfrecords_tools", "tfrecords_tools.*"]),
    package_data={"nlr_tf.reproduce": ["premise_knobs.json"]},
    python_requires=">=3.10,<3.13",
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<4",
        "tensorboard>=2.21,<2.22",
        "tensorflow-datasets>=4.9.8,<5",
        # TFDS prepares a dataset (a manual download such as CIFAR-N's) through etils' resource paths, which import
        # it; tensorflow-datasets does not require it.
        "importlib_resources>=6,<8",
        "numpy>=1.26,<3",
        "absl-py>=2.1,<3",
        "scikit-learn>=1.4,<2",
        "scipy>=1.11,<2",
        "pillow>=10,<14",
        "tqdm>=4.66,<5",
        "matplotlib>=3.8,<4",
        "cleanlab>=2.7,<3",
    ],
    extras_require={
        # nlr-make-tfrecords --runner: the conversion as an Apache Beam pipeline (tfrecords_tools/beam_writer.py).
        "beam": ["apache-beam>=2.77,<3"],
        "test": ["pytest>=8,<10", "pytest-xdist>=3.5,<4", "apache-beam>=2.77,<3"],
    },
    entry_points={
        "console_scripts": [
            "nlr-make-tfrecords=nlr_tf.cli.make_tfrecords:run",
            "nlr-inspect=nlr_tf.cli.inspect_dataset:run",
            "nlr-train=nlr_tf.cli.train:run",
            "nlr-extract-features=nlr_tf.cli.extract_features:run",
            "nlr-eval=nlr_tf.cli.evaluate:run",
            "nlr-export=nlr_tf.cli.export:run",
            "nlr-clean-labels=nlr_tf.cli.clean_labels:run",
            "nlr-reproduce=nlr_tf.cli.reproduce:run",
            "nlr-compare=nlr_tf.cli.compare:run",
        ],
    },
)
