"""Models: backbones, the methods' custom layers, and the method models."""
