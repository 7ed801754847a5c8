"""reply-tracker: a Kubernetes operator that watches message threads for replies."""

__version__ = "0.1.0"
