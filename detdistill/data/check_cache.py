"""Remembers which VOC samples passed `check_sample`, so a restart, resume or
benchmark run does not decode every image again.

One JSON file per list file, in ``$DETDISTILL_VOC_CACHE`` or
``~/.cache/detdistill/voc_checks``: dataset directories are often read-only
or shared, and a cache is not the user's data. An entry holds what a passed
check found (class names, notes), keyed by the absolute paths of the image and
the XML and by both files' (size, mtime_ns, ctime_ns). Any write to a file
changes its ctime, even one that restores size and mtime, so a changed file is
checked again. Only samples that passed are stored: a problem is found afresh
on every run. The whole file is ignored when the label list, the checking code
(voc.py) or PIL changes, when it cannot be parsed, or when it names another
list. If the cache cannot be written, validation goes on uncached.
"""
import hashlib
import json
import os
import tempfile
import time

import PIL

from ..logger import get_logger

__all__ = ['CheckCache', 'default_cache_dir']

logger = get_logger()

# Timestamps have a granularity (a few ms, seconds on some file systems): a
# file rewritten with the same size within one tick of our stat would keep its
# timestamps. Files changed this recently are checked but not remembered.
RACY_NS = 1_000_000_000


def default_cache_dir():
    return os.environ.get('DETDISTILL_VOC_CACHE') or os.path.join(
        os.path.expanduser('~'), '.cache', 'detdistill', 'voc_checks')


def _checker_id(class_names):
    """What a cached "passed" depends on besides the files themselves."""
    h = hashlib.sha1()
    with open(os.path.join(os.path.dirname(__file__), 'voc.py'), 'rb') as f:
        h.update(f.read())
    h.update(PIL.__version__.encode())
    h.update('\n'.join(class_names).encode())
    return h.hexdigest()


def _signature(path):
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class CheckCache:
    def __init__(self, list_path, class_names, cache_dir=None):
        self.list_path = os.path.abspath(list_path)
        self.path = os.path.join(
            cache_dir or default_cache_dir(),
            hashlib.sha1(self.list_path.encode()).hexdigest()[:16] + '.json')
        self.checker = _checker_id(class_names)
        self.old = self._load()
        self.new = {}
        self.error = None  # why the cache could not be written, if it could not

    def _load(self):
        try:
            with open(self.path) as f:
                data = json.load(f)
            if data['list'] == self.list_path and \
                    data['checker'] == self.checker:
                entries = dict(data['entries'])
                for key, entry in entries.items():
                    if not _well_formed(entry):
                        raise ValueError('malformed entry for {!r}'.format(
                            key))
                return entries
        except (FileNotFoundError, NotADirectoryError):
            pass  # no cache yet (or no usable cache directory: see save)
        except (OSError, ValueError, KeyError, TypeError) as e:
            logger.info('Ignoring unreadable validation cache {} ({}); '
                        'rebuilding it'.format(self.path, e))
        return {}

    def lookup(self, image, xml):
        """-> (signatures, found): `found` is the cached {'objects', 'notes'}
        if both files are unchanged since they passed, else None.
        `signatures` (None if a file is missing) are taken before the check,
        so that a change during the check is seen next time."""
        try:
            sigs = [_signature(image), _signature(xml)]
        except OSError:
            return None, None
        key = _key(image, xml)
        entry = self.old.get(key)
        if entry is not None and entry['sigs'] == sigs:
            self.new[key] = entry
            return sigs, entry
        return sigs, None

    def store(self, image, xml, sigs, objects, notes):
        """Remember a sample that passed."""
        if sigs is None:
            return
        recent = time.time_ns() - RACY_NS
        if any(t > recent for sig in sigs for t in sig[1:]):
            return
        self.new[_key(image, xml)] = {'sigs': sigs, 'objects': objects,
                                      'notes': notes}

    def save(self):
        """Write the entries of this run (the list's current samples) if they
        differ from what was loaded; atomic, so readers never see a partial
        file. Failure is logged once per directory, never raised."""
        if self.new == self.old:
            return
        folder, tmp = os.path.dirname(self.path), None
        try:
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp',
                                       suffix='.json')
            with os.fdopen(fd, 'w') as f:
                json.dump({'list': self.list_path, 'checker': self.checker,
                           'entries': self.new}, f)
            os.replace(tmp, self.path)
        except OSError as e:
            self.error = str(e)
            if tmp is not None and os.path.exists(tmp):
                os.remove(tmp)
            if folder not in _warned:
                _warned.add(folder)
                logger.warning('Cannot write the validation cache in {} ({}): '
                               'every start checks every image again. Set '
                               'DETDISTILL_VOC_CACHE to a writable '
                               'directory.'.format(folder, e))


_warned = set()


def _well_formed(entry):
    return isinstance(entry, dict) and set(entry) == {
        'sigs', 'objects', 'notes'} and isinstance(entry['sigs'], list) and \
        isinstance(entry['objects'], list) and isinstance(entry['notes'], list)


def _key(image, xml):
    return os.path.abspath(image) + '\n' + os.path.abspath(xml)
