from .trainer import (Trainer, NonFiniteLossError, set_device,  # noqa: F401
                      build_detector)
from .callbacks import default_callbacks  # noqa: F401
