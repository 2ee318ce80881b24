"""A synthetic VOC dataset that needs a detector, not a colour lookup.

Six shape classes in random colours (colour says nothing about class), sizes
from 10 to ~70 px, aspect 0.6-1.7, rotated, on noisy gradient backgrounds with
unlabeled clutter (lines, specks, arcs), overlapping each other. Pairs such as
circle/ring and square/cross differ in detail, so a small, briefly trained
student trails a bigger teacher: that gap is what distillation can recover.
Written as real JPEG + VOC XML files, then split with split_voc, so the demo
goes through the same readers and tools as a user's data.
"""
import hashlib
import math
import os
import random

import cv2
import numpy as np

from .voc import split_voc

__all__ = ['DEMO_CLASSES', 'DATA_PROFILES', 'make_demo_voc',
           'dataset_digest', 'DEMO_DIGEST', 'PINNED_DIGESTS']

DEMO_CLASSES = ['circle', 'ring', 'square', 'cross', 'triangle', 'star']
# How the images are drawn. 'demo' is the quick main job's data (small
# objects in clutter: hard for a briefly trained student). The 'converged'
# profiles are what a small model can learn to its plateau on a CPU budget:
# larger objects, fewer per image, less clutter and noise; 'converged_b' is
# the second dataset, drawn differently (other classes, sizes and scenes), so
# a conclusion does not rest on one generator setting.
DATA_PROFILES = {
    'demo': dict(image_size=160, classes=DEMO_CLASSES, side=(10, 70),
                 objects=(1, 6), clutter=(2, 7), noise=(4, 14), blur=0.5),
    'converged': dict(image_size=128, classes=DEMO_CLASSES, side=(16, 60),
                      objects=(1, 4), clutter=(0, 2), noise=(2, 8),
                      blur=0.3),
    'converged_b': dict(image_size=128, classes=['circle', 'ring', 'square',
                                                 'triangle'],
                        side=(20, 72), objects=(1, 3), clutter=(1, 3),
                        noise=(3, 10), blur=0.5),
}
IMAGE_DIR = 'VOCdevkit/VOC2012/JPEGImages'
ANNO_DIR = 'VOCdevkit/VOC2012/Annotations'


def _polygon(name, cx, cy, w, h, angle):
    if name == 'triangle':
        pts = [(0, -1), (0.87, 0.5), (-0.87, 0.5)]
    elif name == 'star':
        pts = [((1 if k % 2 == 0 else 0.45) * math.sin(k * math.pi / 5),
                -(1 if k % 2 == 0 else 0.45) * math.cos(k * math.pi / 5))
               for k in range(10)]
    elif name == 'cross':
        a = 0.33
        pts = [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1),
               (-a, 1), (-a, a), (-1, a), (-1, -a), (-a, -a)]
    else:  # square
        pts = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    c, s = math.cos(angle), math.sin(angle)
    return np.array([(cx + (x * w / 2) * c - (y * h / 2) * s,
                      cy + (x * w / 2) * s + (y * h / 2) * c)
                     for x, y in pts])


def _draw(img, name, cx, cy, w, h, angle, color, rng):
    if name in ('circle', 'ring'):
        thick = -1 if name == 'circle' else max(2, int(min(w, h) * 0.18))
        cv2.ellipse(img, (int(cx), int(cy)), (int(w / 2), int(h / 2)),
                    math.degrees(angle), 0, 360, color, thick, cv2.LINE_AA)
        c, s = abs(math.cos(angle)), abs(math.sin(angle))
        bw = math.sqrt((w / 2 * c) ** 2 + (h / 2 * s) ** 2)
        bh = math.sqrt((w / 2 * s) ** 2 + (h / 2 * c) ** 2)
        return cx - bw, cy - bh, cx + bw, cy + bh
    pts = _polygon(name, cx, cy, w, h, angle)
    cv2.fillPoly(img, [np.round(pts).astype(np.int32)], color, cv2.LINE_AA)
    return pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()


def _background(rng, h, w, noise):
    base = np.array([rng.randint(0, 255) for _ in range(3)], np.float32)
    tilt = np.array([rng.uniform(-80, 80) for _ in range(3)], np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1)) / max(h, w)
    img = base + t[..., None] * tilt
    img += np.random.RandomState(rng.randint(0, 2**31)).normal(
        0, rng.uniform(*noise), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), base


def _contrasting(rng, bg):
    while True:
        color = np.array([rng.randint(0, 255) for _ in range(3)])
        if np.abs(color - bg).sum() > 160:
            return tuple(int(c) for c in color)


def _clutter(img, rng, bg, count):
    h, w = img.shape[:2]
    for _ in range(rng.randint(*count)):
        color = _contrasting(rng, bg)
        kind = rng.random()
        if kind < 0.4:
            cv2.line(img, (rng.randint(0, w), rng.randint(0, h)),
                     (rng.randint(0, w), rng.randint(0, h)), color,
                     rng.randint(1, 2), cv2.LINE_AA)
        elif kind < 0.7:
            r = rng.randint(1, 3)
            cv2.circle(img, (rng.randint(0, w), rng.randint(0, h)), r, color,
                       -1)
        else:  # an arc: part of a ring, not a ring
            cv2.ellipse(img, (rng.randint(0, w), rng.randint(0, h)),
                        (rng.randint(6, 20), rng.randint(6, 20)),
                        rng.randint(0, 180), 0, rng.randint(60, 200), color, 2)


def _iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / max(union - inter, 1e-6)


def _xml(stem, w, h, objects):
    objs = ''.join(
        '  <object>\n    <name>{}</name>\n    <pose>Unspecified</pose>\n'
        '    <truncated>0</truncated>\n    <difficult>0</difficult>\n'
        '    <bndbox>\n      <xmin>{}</xmin>\n      <ymin>{}</ymin>\n'
        '      <xmax>{}</xmax>\n      <ymax>{}</ymax>\n    </bndbox>\n'
        '  </object>\n'.format(n, *b) for n, b in objects)
    return ('<annotation>\n  <folder>VOC2012</folder>\n  <filename>{}.jpg'
            '</filename>\n  <size>\n    <width>{}</width>\n    <height>{}'
            '</height>\n    <depth>3</depth>\n  </size>\n{}</annotation>\n'
            .format(stem, w, h, objs))


def make_image(rng, size=None, profile='demo'):
    """One image (BGR uint8) and its objects [(class, [x1, y1, x2, y2])],
    drawn as DATA_PROFILES[profile] says (`size` overrides its image_size)."""
    p = DATA_PROFILES[profile]
    size = size or p['image_size']
    h = int(size * rng.uniform(0.8, 1.25))
    w = int(size * rng.uniform(0.8, 1.25))
    img, bg = _background(rng, h, w, p['noise'])
    _clutter(img, rng, bg, p['clutter'])
    objects, boxes = [], []
    for _ in range(rng.randint(*p['objects'])):
        for _attempt in range(10):
            name = rng.choice(p['classes'])
            side = math.exp(rng.uniform(*map(math.log, p['side'])))
            aspect = rng.uniform(0.6, 1.7)
            ow, oh = side * math.sqrt(aspect), side / math.sqrt(aspect)
            angle = rng.uniform(-0.5, 0.5) if name != 'star' else \
                rng.uniform(-0.6, 0.6)
            cx, cy = rng.uniform(ow / 2, w - ow / 2), rng.uniform(oh / 2,
                                                                  h - oh / 2)
            if w < ow or h < oh:
                continue
            probe = (cx - ow / 2, cy - oh / 2, cx + ow / 2, cy + oh / 2)
            if all(_iou(probe, b) < 0.3 for b in boxes):
                break
        else:
            continue
        box = _draw(img, name, cx, cy, ow, oh, angle, _contrasting(rng, bg),
                    rng)
        box = [int(max(0, math.floor(box[0]))), int(max(0, math.floor(box[1]))),
               int(min(w - 1, math.ceil(box[2]))),
               int(min(h - 1, math.ceil(box[3])))]
        if box[2] - box[0] < 4 or box[3] - box[1] < 4:
            continue
        boxes.append(box)
        objects.append((name, box))
    if rng.random() < p['blur']:
        img = cv2.GaussianBlur(img, (3, 3), rng.uniform(0.3, 0.9))
    return img, objects


# sha256 of the default dataset (`make_demo_voc()`: 800 images, seed 0), as
# written with the pinned numpy and opencv-python-headless on this project's
# machine; tests/test_data.py checks it, the benchmark records the digest of
# the data it ran on, so "the same data" is checked, not assumed.
DEMO_DIGEST = '9a1c551a0db65821d1b788e70c8a589618fa202e553890809126012e2e1335b2'
# The benchmark profiles' datasets, as tools/benchmark.py --profile P writes
# them (bench/catalogue.yaml, a profile's make_data).
PINNED_DIGESTS = {
    'demo': DEMO_DIGEST,
    'converged':
        'a7c46aa5257cbffb9ac621b5aca109c0f24a03e93592333ce0ada8f0d0c14372',
    'converged_b':
        '653a2820794c66912810eb0722ba74d67921566521ed8bd7930b59b5870b28d7',
    # dataset/bccd as tools/split_voc.py lists it (bench/catalogue.yaml)
    'bccd': '4db17eb63bdcb26858a54b58dc8cbab54aa59b70dfbcb315653ea56d79dc673c',
}


# The list files make_demo_voc (through split_voc) writes.
GENERATED_LISTS = ('demo_classes.txt', 'label_list.txt', 'test.txt',
                   'trainval.txt', 'unlabeled.txt')


def dataset_digest(root):
    """sha256 over the relative paths and bytes of every image, annotation
    and list file the generator writes. Lists derived later (the
    benchmark's half-label split) are functions of these and left out, so
    they do not make the same data look different."""
    h = hashlib.sha256()
    if os.path.isdir(os.path.join(root, IMAGE_DIR)):
        names = [os.path.join(d, f) for d in (IMAGE_DIR, ANNO_DIR)
                 for f in sorted(os.listdir(os.path.join(root, d)))]
    else:  # another layout (a real dataset split by split_voc.py): what
        # the lists name
        names = set()
        for lst in ('trainval.txt', 'test.txt'):
            with open(os.path.join(root, lst)) as f:
                names.update(p for line in f for p in line.split())
        names = sorted(names)
    names += sorted(f for f in os.listdir(root) if f in GENERATED_LISTS)
    for name in names:
        h.update(name.encode() + b'\0')
        with open(os.path.join(root, name), 'rb') as f:
            h.update(f.read())
    return h.hexdigest()


def make_demo_voc(out='dataset/demo_voc', num_images=800, ratio=0.8, seed=0,
                  unlabeled=0, image_size=None, overwrite=False,
                  profile='demo'):
    """Write the dataset and its lists; returns split_voc's summary."""
    img_dir, ann_dir = (os.path.join(out, d) for d in (IMAGE_DIR, ANNO_DIR))
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    rng = random.Random(seed)
    for i in range(num_images):
        img, objects = make_image(rng, image_size, profile)
        stem = 'demo_{:05d}'.format(i)
        ok, buf = cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_QUALITY,
                                            rng.randint(70, 95)])
        with open(os.path.join(img_dir, stem + '.jpg'), 'wb') as f:
            f.write(buf.tobytes())
        with open(os.path.join(ann_dir, stem + '.xml'), 'w') as f:
            f.write(_xml(stem, img.shape[1], img.shape[0], objects))
    label_list = os.path.join(out, 'demo_classes.txt')
    with open(label_list, 'w') as f:
        f.write(''.join(n + '\n' for n in DATA_PROFILES[profile]['classes']))
    return split_voc(out, ratio=ratio, seed=seed, unlabeled=unlabeled,
                     image_dir=IMAGE_DIR, anno_dir=ANNO_DIR,
                     label_list=label_list, overwrite=overwrite)
