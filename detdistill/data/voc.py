"""Pascal VOC annotations: parse, validate up front, split into
PaddleDetection list files.

A bad file costs a GPU day when it surfaces mid-training, so every check here
names the file and the field, and validation reports every problem at once.
"""
import collections
import os
import random
import xml.etree.ElementTree as ET

from PIL import Image, ImageFile

from ..errors import VOCDataError
from ..fileio import IMAGE_EXTS, atomic_write, read_label_list
from .check_cache import CheckCache

__all__ = ['VOCDataError', 'parse_voc_xml', 'check_image', 'check_sample',
           'validate_voc_list', 'ValidationReport', 'split_voc']

def _number(node, field, xml_path):
    el = node.find(field)
    if el is None or el.text is None:
        raise VOCDataError('{}: missing <{}>'.format(xml_path, field))
    try:
        return float(el.text)
    except ValueError:
        raise VOCDataError('{}: <{}> is not a number: {!r}'.format(
            xml_path, field, el.text)) from None


def parse_voc_xml(xml_path, class_names=None):
    """-> {'filename', 'width', 'height', 'objects': [{'name', 'bbox',
    'difficult'}], 'skipped': [why, ...]}: zero-size boxes are skipped (as
    PaddleDetection's reader does) and named in `skipped`; VOCDataError
    names the file and field of any other problem."""
    try:
        root = ET.parse(xml_path).getroot()
    except FileNotFoundError:
        raise VOCDataError('{}: annotation file not found'.format(
            xml_path)) from None
    except ET.ParseError as e:
        raise VOCDataError('{}: malformed XML ({})'.format(xml_path,
                                                          e)) from None
    size = root.find('size')
    if size is None:
        raise VOCDataError('{}: missing <size>'.format(xml_path))
    width, height = _number(size, 'width', xml_path), _number(
        size, 'height', xml_path)
    objects, skipped = [], []
    for i, obj in enumerate(root.findall('object')):
        name_el = obj.find('name')
        if name_el is None or not (name_el.text or '').strip():
            raise VOCDataError('{}: object {} has no <name>'.format(
                xml_path, i))
        name = name_el.text.strip()
        if class_names is not None and name not in class_names:
            raise VOCDataError(
                "{}: object {} has unknown class '{}' (known: {})".format(
                    xml_path, i, name, ', '.join(class_names)))
        box = obj.find('bndbox')
        if box is None:
            raise VOCDataError('{}: object {} ({}) has no <bndbox>'.format(
                xml_path, i, name))
        x1, y1, x2, y2 = (_number(box, k, xml_path)
                          for k in ('xmin', 'ymin', 'xmax', 'ymax'))
        where = '{}: object {} ({}) <bndbox> [{:g}, {:g}, {:g}, {:g}]'.format(
            xml_path, i, name, x1, y1, x2, y2)
        if x2 < x1 or y2 < y1:  # swapped corners: a mistake to fix, not drop
            raise VOCDataError('{} has xmax < xmin or ymax < ymin'.format(
                where))
        if x2 == x1 or y2 == y1:
            # A click without a drag in the labelling tool. PaddleDetection's
            # VOC reader skips such a box with a warning; so does training
            # here, and validation counts it.
            skipped.append('{} has zero size; skipped'.format(where))
            continue
        diff = obj.find('difficult')
        objects.append({'name': name, 'bbox': [x1, y1, x2, y2],
                        'difficult': int(diff.text) if diff is not None and
                        (diff.text or '').strip().isdigit() else 0})
    fn = root.find('filename')
    return {'filename': fn.text if fn is not None else None, 'width': width,
            'height': height, 'objects': objects, 'skipped': skipped}


def check_image(path):
    """Fully decode an image: a truncated or corrupt file fails here, not in
    a data-loader worker hours into training."""
    if not os.path.isfile(path):
        raise VOCDataError('{}: image file not found'.format(path))
    # ppdet sets PIL's LOAD_TRUNCATED_IMAGES globally, which would let a
    # truncated JPEG decode "successfully" with grey rows: check strictly.
    lenient = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(path) as im:
            im.load()
            return im.size
    except Exception as e:  # PIL raises many types for bad files
        raise VOCDataError('{}: cannot decode image ({})'.format(
            path, e)) from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = lenient


def check_sample(image_path, xml_path, class_names=None):
    """Decode the image, parse its XML, and check that they agree.

    Returns (annotation, notes). Disagreements the reader cannot repair raise
    VOCDataError naming both files (the XML's <size> is not the image's, a
    box lies wholly outside the image); `notes` lists what ppdet's VOC reader
    repairs or skips on its own, for the user to know: boxes it clips to the
    image, images without objects (it leaves them out of training)."""
    w, h = check_image(image_path)
    ann = parse_voc_xml(xml_path, class_names)
    xw, xh = int(ann['width']), int(ann['height'])
    if xw > 0 and xh > 0 and (xw, xh) != (w, h):
        raise VOCDataError('{}: <size> says {}x{} but {} is {}x{} (the boxes '
                           'may belong to another version of the image)'
                           .format(xml_path, xw, xh, image_path, w, h))
    notes = list(ann['skipped'])
    if not ann['objects']:
        notes.append('{}: no <object>; the VOC reader leaves this image out '
                     'of training'.format(xml_path))
    for i, o in enumerate(ann['objects']):
        x1, y1, x2, y2 = o['bbox']
        where = '{}: object {} ({}) <bndbox> [{:g}, {:g}, {:g}, {:g}]'.format(
            xml_path, i, o['name'], x1, y1, x2, y2)
        if x1 >= w or y1 >= h or x2 <= 0 or y2 <= 0:
            raise VOCDataError('{} lies outside the {}x{} image'.format(
                where, w, h))
        if x1 < -1 or y1 < -1 or x2 > w + 1 or y2 > h + 1:  # 1 px: VOC habit
            notes.append('{} extends beyond the {}x{} image; the reader '
                         'clips it'.format(where, w, h))
    return ann, notes


class ValidationReport:
    def __init__(self, list_path):
        self.list_path = list_path
        self.num_images = 0
        self.per_class = collections.Counter()
        self.problems = []
        self.notes = []
        self.num_checked = 0  # samples decoded and parsed in this run
        self.num_cached = 0   # unchanged samples that passed before
        self.cache = None

    def format_counts(self):
        """One log line: what was checked, what came from the cache."""
        if self.cache is None:
            where = 'no cache'
        elif self.cache.error:
            where = 'cache not written: {}'.format(self.cache.error)
        else:
            where = 'cache {}'.format(self.cache.path)
        return ('Validated {}: {} images, {} objects; {} checked, {} unchanged '
                'since they passed ({})'.format(
                    self.list_path, self.num_images, self.num_objects,
                    self.num_checked, self.num_cached, where))

    @property
    def num_objects(self):
        return sum(self.per_class.values())

    def format_notes(self, limit=5):
        """One paragraph for the log: how many notes, the first `limit`."""
        if not self.notes:
            return ''
        shown = self.notes[:limit]
        more = len(self.notes) - len(shown)
        return '{} note(s) on {} (training goes on):\n  {}{}'.format(
            len(self.notes), self.list_path, '\n  '.join(shown),
            '\n  ... and {} more'.format(more) if more else '')

    def raise_if_problems(self, limit=20):
        if not self.problems:
            return
        shown = self.problems[:limit]
        more = len(self.problems) - len(shown)
        raise VOCDataError('{} problem(s) in {}:\n  {}{}'.format(
            len(self.problems), self.list_path, '\n  '.join(shown),
            '\n  ... and {} more'.format(more) if more else ''))


def validate_voc_list(dataset_dir, anno_path, label_list, cache_dir=None):
    """Check every line of a PaddleDetection VOC list file (`image xml`,
    relative to dataset_dir) with `check_sample`: the image decodes, the XML
    parses and agrees with it, every class is in label_list. Collects all
    problems and notes. Samples that passed before and whose two files are
    unchanged are taken from the cache (see check_cache.py) with their notes,
    instead of decoded again."""
    list_path = os.path.join(dataset_dir, anno_path)
    if not os.path.isfile(list_path):
        raise VOCDataError('list file {} does not exist'.format(list_path))
    names = read_label_list(label_list)
    report = ValidationReport(list_path)
    report.cache = cache = CheckCache(list_path, names, cache_dir)
    with open(list_path) as f:
        lines = [line.split() for line in f if line.strip()]
    for n, parts in enumerate(lines, 1):
        if len(parts) != 2:
            report.problems.append('{} line {}: expected "image xml", got '
                                   '{!r}'.format(list_path, n, ' '.join(parts)))
            continue
        img, xml = (os.path.join(dataset_dir, p) for p in parts)
        sigs, found = cache.lookup(img, xml)
        if found:
            report.num_cached += 1
        else:
            report.num_checked += 1
            try:
                ann, notes = check_sample(img, xml, names)
            except VOCDataError as e:
                report.problems.append(str(e))
                continue
            found = {'objects': [o['name'] for o in ann['objects']],
                     'notes': notes}
            cache.store(img, xml, sigs, **found)
        report.notes += found['notes']
        report.num_images += 1
        report.per_class.update(found['objects'])
    cache.save()
    return report


def split_voc(dataset_dir, ratio=0.9, seed=0, unlabeled=0,
              image_dir='VOCdevkit/VOC2012/JPEGImages',
              anno_dir='VOCdevkit/VOC2012/Annotations', label_list=None,
              overwrite=False):
    """Write trainval.txt, test.txt, label_list.txt (and unlabeled.txt with
    `unlabeled` images held out without labels) in dataset_dir.

    Deterministic: the same files and seed give byte-identical lists. Every
    image must have a parseable annotation with known classes, else
    VOCDataError lists every problem. Returns the per-split class counts."""
    if not 0 < ratio <= 1:
        raise VOCDataError('--ratio must be in (0, 1], got {}'.format(ratio))
    outputs = ['trainval.txt', 'test.txt', 'label_list.txt'] + (
        ['unlabeled.txt'] if unlabeled else [])
    if not overwrite:
        for name in outputs:
            path = os.path.join(dataset_dir, name)
            if os.path.exists(path):
                raise VOCDataError('{} exists; pass --overwrite to replace '
                                   'it'.format(path))
    img_root = os.path.join(dataset_dir, image_dir)
    if not os.path.isdir(img_root):
        raise VOCDataError('image directory {} does not exist'.format(
            img_root))
    images = collections.defaultdict(list)  # stem -> image file names
    for f in sorted(os.listdir(img_root)):
        stem, e = os.path.splitext(f)
        if e.lower() in IMAGE_EXTS:
            images[stem].append(f)
    if not images:
        raise VOCDataError('no images in {}'.format(img_root))
    names = read_label_list(label_list) if label_list else None
    anns, report = {}, ValidationReport(img_root)
    for stem, files in images.items():
        if len(files) > 1:  # x.jpg and x.png: which one does x.xml label?
            report.problems.append(
                '{}: several images for one annotation {} is ambiguous; '
                'remove or rename all but one'.format(
                    ' and '.join(os.path.join(img_root, f) for f in files),
                    os.path.join(dataset_dir, anno_dir, stem + '.xml')))
    ext = {stem: os.path.splitext(files[0])[1]
           for stem, files in images.items() if len(files) == 1}
    stems = sorted(ext)
    for stem in stems:
        xml = os.path.join(dataset_dir, anno_dir, stem + '.xml')
        try:
            anns[stem], notes = check_sample(
                os.path.join(img_root, stem + ext[stem]), xml, names)
            report.notes += notes
        except VOCDataError as e:
            report.problems.append(str(e))
    report.raise_if_problems()
    if names is None:
        names = sorted({o['name'] for a in anns.values()
                        for o in a['objects']})
    order = list(stems)
    random.Random(seed).shuffle(order)
    if unlabeled >= len(order):
        raise VOCDataError('--unlabeled {} leaves no labeled images (found '
                           '{})'.format(unlabeled, len(order)))
    held, labeled = order[:unlabeled], order[unlabeled:]
    n_train = int(round(ratio * len(labeled)))
    splits = {'trainval': labeled[:n_train], 'test': labeled[n_train:]}

    def line(stem):
        return '{}/{}{} {}/{}.xml\n'.format(image_dir, stem, ext[stem],
                                            anno_dir, stem)

    for split, members in splits.items():
        atomic_write(os.path.join(dataset_dir, split + '.txt'),
                     ''.join(line(s) for s in members))
    atomic_write(os.path.join(dataset_dir, 'label_list.txt'),
                 ''.join(n + '\n' for n in names))
    if unlabeled:
        atomic_write(os.path.join(dataset_dir, 'unlabeled.txt'), ''.join(
            '{}/{}{}\n'.format(image_dir, s, ext[s]) for s in held))
    summary = {split: collections.Counter(o['name'] for s in members
                                          for o in anns[s]['objects'])
               for split, members in splits.items()}
    summary['images'] = {k: len(v) for k, v in splits.items()}
    summary['images']['unlabeled'] = len(held)
    summary['classes'] = names
    summary['notes'] = report.format_notes()
    return summary


def format_summary(summary):
    names = summary['classes']
    rows = ['{:<14}{:>10}{:>10}'.format('class', 'trainval', 'test')]
    rows += ['{:<14}{:>10}{:>10}'.format(n, summary['trainval'][n],
                                         summary['test'][n]) for n in names]
    imgs = summary['images']
    rows.append('{:<14}{:>10}{:>10}'.format('images', imgs['trainval'],
                                            imgs['test']))
    if imgs['unlabeled']:
        rows.append('unlabeled images: {}'.format(imgs['unlabeled']))
    if summary.get('notes'):
        rows.append(summary['notes'])
    return '\n'.join(rows)
