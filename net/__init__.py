"""CGD: Combination of Multiple Global Descriptors for image retrieval, in TensorFlow/Keras."""

__version__ = "0.1.0"
