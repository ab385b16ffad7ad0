"""signgate: admit into Kubernetes only container images whose cosign signatures verify.

The package is laid out as a pure core (reference, policy, cosign, keys, config) with I/O at the
edges (registry, hook, cli). Import nothing heavy here: every admission request is a new process.
"""

__version__ = "0.1.0"
