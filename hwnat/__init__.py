"""hwnat: hardware-aware neural architecture search.

Latency tables and predictors measured on real devices, and search that uses them as objectives.
"""

__version__ = "0.1.0"
