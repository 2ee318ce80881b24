"""Knowledge distillation for one-stage detectors on PaddleDetection (ppdet).

Importing the package registers its components with ppdet's workspace, so YAML
configs can name them like any ppdet module.
"""
from . import compat  # noqa: F401  (first: fixes ppdet 2.6 on this stack)
from .modeling import backbones, heads, necks  # noqa: F401
from .data import ld_targets  # noqa: F401  (the Gt2LDTarget transform)
from .distill import feature_losses, losses  # noqa: F401

__version__ = '0.1.0'
