"""ablation bench: a benchmarking and ablation harness for CNN image classifiers in PyTorch.

Subpackages: ``models`` (the zoo), ``measure`` (params, MACs, speed, memory, environment), ``data``
(data sets and loaders), ``train`` (the engine), ``report`` (HTML reports), ``executors`` (where
cells run). ``python -m bench --help`` lists the commands.
"""

__version__ = "0.1.0"
