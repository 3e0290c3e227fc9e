"""anetrain: train transformers on Apple's Neural Engine, or on its simulator anywhere."""

__version__ = "0.1.0"
