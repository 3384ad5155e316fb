"""Every metric qie-bench computes: one module per metric (family), found by the registry.

A module here declares everything about its metrics (direction, range, reference, region,
convention, fidelity rank, default order, the weights its model needs) and registers them with
``@register_metric``. Adding a metric is adding one module here (and its test); nothing else
lists metrics. Modules must not import torch, PIL or the metric libraries at import time
(import them inside functions): the registry imports every module here to list names, and a
suite file is validated without torch.
"""
