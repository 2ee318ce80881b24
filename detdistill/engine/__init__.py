from .trainer import Trainer, NonFiniteLossError, set_device  # noqa: F401
from .callbacks import default_callbacks  # noqa: F401
