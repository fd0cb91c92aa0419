"""storewarden: keeps a BentoML model store from filling the disk."""

__version__ = "0.1.0"
