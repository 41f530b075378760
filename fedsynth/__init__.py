"""fedsynth: federated sharing of privacy-certified synthetic medical images."""

__version__ = "0.1.0"
