"""Pseudo-labels: a detector's detections written as Pascal VOC XML files,
for a user to inspect, correct (e.g. in LabelImg) and train on.

Boxes are written in integer pixels, clipped to the image, as VOC and its
tools expect; a box left empty by clipping and rounding is left out. Each <object> also
carries the detector's <score> (VOC readers ignore unknown tags). An image
with no detection above the threshold gets an XML without <object>, so every
image read has its file and the validation notes it.
"""
import os
from xml.sax.saxutils import escape

from .data.voc import check_image
from .errors import VOCDataError
from .fileio import atomic_write
from .infer import predict

__all__ = ['voc_objects', 'voc_xml', 'write_pseudo_labels']


def voc_objects(dets, class_names, width, height, threshold):
    """[{'name', 'bbox' (ints, clipped), 'score'}] of the detections
    [[cls, score, x1, y1, x2, y2], ...] with score >= threshold."""
    objects = []
    for cls, score, x1, y1, x2, y2 in dets:
        if score < threshold:
            continue
        x1, x2 = (int(round(min(max(v, 0), width))) for v in (x1, x2))
        y1, y2 = (int(round(min(max(v, 0), height))) for v in (y1, y2))
        if x2 <= x1 or y2 <= y1:
            continue
        objects.append({'name': class_names[int(cls)], 'score': float(score),
                        'bbox': [x1, y1, x2, y2]})
    return objects


def voc_xml(image_path, width, height, objects):
    rows = ['<annotation>',
            '  <folder>{}</folder>'.format(escape(os.path.basename(
                os.path.dirname(os.path.abspath(image_path))))),
            '  <filename>{}</filename>'.format(escape(os.path.basename(
                image_path))),
            '  <size><width>{}</width><height>{}</height><depth>3</depth>'
            '</size>'.format(width, height),
            '  <segmented>0</segmented>']
    for o in objects:
        x1, y1, x2, y2 = o['bbox']
        rows += ['  <object>',
                 '    <name>{}</name>'.format(escape(o['name'])),
                 '    <pose>Unspecified</pose>',
                 '    <truncated>0</truncated>',
                 '    <difficult>0</difficult>',
                 '    <score>{:.4f}</score>'.format(o['score']),
                 '    <bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax>'
                 '<ymax>{}</ymax></bndbox>'.format(x1, y1, x2, y2),
                 '  </object>']
    rows.append('</annotation>')
    return '\n'.join(rows) + '\n'


def write_pseudo_labels(cfg, detector, images, class_names, out_dir,
                        threshold=0.5):
    """Run `detector` (eval mode, cfg's TestReader) on `images` and write
    out_dir/<image stem>.xml for each, atomically. -> [(xml path, number of
    objects)] in image order."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in images]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise VOCDataError('several images share the name {} and would '
                           'write the same XML in {}'.format(
                               ', '.join(twice), out_dir))
    sizes, problems = {}, []
    for path in images:  # every bad image named before any inference
        try:
            sizes[path] = check_image(path)
        except VOCDataError as e:
            problems.append(str(e))
    if problems:
        raise VOCDataError('{} problem(s) in the images:\n  {}'.format(
            len(problems), '\n  '.join(problems)))
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for path, dets in predict(cfg, detector, images):
        width, height = sizes[path]
        objects = voc_objects(dets, class_names, width, height, threshold)
        xml = os.path.join(out_dir, os.path.splitext(
            os.path.basename(path))[0] + '.xml')
        atomic_write(xml, voc_xml(path, width, height, objects))
        written.append((xml, len(objects)))
    return written
