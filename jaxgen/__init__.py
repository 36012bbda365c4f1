"""jaxgen: train and sample text-generation models in JAX/Flax."""

__version__ = "0.1.0"
