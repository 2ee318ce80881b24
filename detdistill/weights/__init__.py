"""Weights from a path or a URL, loaded with a report.

Three layers, each usable on its own:

- ``resolve_weights(path_or_url)`` (download.py, lock.py): a local file or
  folder (PaddleDetection style, the ``.pdparams`` suffix optional) or a URL
  downloaded once into a cache, with checksums;
- ``read_state_dict(path)`` (formats.py): a file or folder -> ``{ppdet 2.x
  name: array}``, by one reader per format: ``paddle.save`` pickles, and
  PaddleDetection 0.5 static-graph archives (static_archive.py, renamed by
  the map in static_names.py);
- ``load_weights(model, path_or_url)`` (load.py): both of the above, then
  the comparison with the model, the load and the report.
"""
from ..errors import (WeightsDownloadError, WeightsFileError,
                      WeightsMismatchError)
from .download import default_cache_dir, resolve_weights
from .formats import FORMATS, read_state_dict
from .load import HEAD_KEYS, LoadReport, load_pretrain, load_weights

__all__ = ['WeightsMismatchError', 'WeightsFileError', 'WeightsDownloadError',
           'LoadReport', 'FORMATS', 'default_cache_dir', 'resolve_weights',
           'read_state_dict', 'load_weights', 'load_pretrain', 'HEAD_KEYS']
