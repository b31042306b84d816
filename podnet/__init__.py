"""podnet: Kubernetes networking as real, separate processes exchanging real traffic."""

__version__ = "0.1.0"
