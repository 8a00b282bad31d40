"""The methods' custom layers, each registered for serialization (no Lambda layers).

This package's own namespace imports no TensorFlow: flag definitions read `ACTIVATIONS`.
"""

# The clean and residual nets' non-linearities (Hu et al. 2019, Table 2).
ACTIVATIONS = ("sigmoid", "tanh", "relu")
