"""CleanNet (Lee et al. 2018): `network` is the embedding network, `model` the method's model."""
