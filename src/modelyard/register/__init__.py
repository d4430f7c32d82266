"""Step 1 of the flow: scan a training output, resolve its metadata, store it, record it."""

from modelyard.register.metadata import RegisterOptions

__all__ = ["RegisterOptions"]
