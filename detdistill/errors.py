"""The errors a user can fix from the message alone. They share one base
class, so every tool prints them as one line and exits 1 (cli.main_guard)
instead of a traceback; each also keeps the builtin base its callers knew
(ValueError, RuntimeError, ...)."""

__all__ = ['DetDistillError', 'ConfigError', 'VOCDataError',
           'CheckpointError', 'NonFiniteLossError', 'PairingError',
           'WeightsMismatchError', 'WeightsFileError', 'WeightsDownloadError',
           'ExportError', 'OnnxExportError', 'ExportCheckError',
           'InferCfgError', 'QuantizationError']


class DetDistillError(Exception):
    """Base of every error below."""


class ConfigError(DetDistillError, ValueError):
    """A config file, key or value that cannot work; names file and key."""


class VOCDataError(DetDistillError, ValueError):
    """A dataset file (list, image, annotation) that cannot be used."""


class CheckpointError(DetDistillError, RuntimeError):
    """A checkpoint that is incomplete, mixed or does not fit the run."""


class NonFiniteLossError(DetDistillError, FloatingPointError):
    """Training diverged; nothing of the diverged step was saved."""


class PairingError(DetDistillError, ValueError):
    """Teacher and student outputs that cannot be paired (names, shapes)."""


class WeightsMismatchError(DetDistillError, ValueError):
    """The checkpoint's names or shapes do not fit the model."""


class WeightsFileError(WeightsMismatchError):
    """The file cannot be read as weights (truncated, corrupt, unsupported
    format). A subclass of WeightsMismatchError so that callers handling
    "these weights do not fit" also handle "these are not weights"."""


class WeightsDownloadError(DetDistillError, RuntimeError):
    """A URL could not be fetched, or its content failed its checksum."""


class ExportError(DetDistillError, ValueError):
    """The config or model cannot be exported as asked."""


class OnnxExportError(DetDistillError, RuntimeError):
    """paddle2onnx failed or produced a model that cannot be used."""


class ExportCheckError(DetDistillError, RuntimeError):
    """An exported model's outputs differ from the dygraph model's."""


class InferCfgError(DetDistillError, ValueError):
    """An exported model's infer_cfg.yml is missing or malformed."""


class QuantizationError(DetDistillError, ValueError):
    """A quantization that cannot run as asked: no calibration images, a
    checkpoint that is not the expected float or INT8 one, a layer without
    a scale."""
