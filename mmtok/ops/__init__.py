"""The fused nearest-codebook lookup: the public op, its backends and the torch reference."""
from .backends import BACKENDS, info, set_cpu_capability
from .group_norm import group_norm_channels_last
from .nearest_code import METRICS, nearest_code
from .reference import nearest_code_reference

__all__ = ["nearest_code", "nearest_code_reference", "info", "BACKENDS", "METRICS", "set_cpu_capability",
           "group_norm_channels_last"]
