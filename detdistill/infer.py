"""Run a detector on image files and draw its detections."""
import glob
import os

import paddle
from PIL import Image, ImageDraw
from ppdet.core.workspace import create

from .config import activate
from .data.loader import build_loader
from .fileio import IMAGE_EXTS

__all__ = ['list_images', 'predict', 'draw_detections']

COLORS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48),
          (145, 30, 180), (70, 240, 240), (240, 50, 230), (128, 128, 0)]


def list_images(infer_img=None, infer_dir=None):
    if infer_img:
        if not os.path.isfile(infer_img):
            raise FileNotFoundError('--infer_img {} does not exist'.format(
                infer_img))
        return [infer_img]
    if not infer_dir or not os.path.isdir(infer_dir):
        raise FileNotFoundError('--infer_dir {} is not a directory'.format(
            infer_dir))
    images = sorted(p for p in glob.glob(os.path.join(infer_dir, '*'))
                    if p.lower().endswith(IMAGE_EXTS))
    if not images:
        raise FileNotFoundError('no images in --infer_dir {}'.format(
            infer_dir))
    return images


def predict(cfg, detector, images):
    """Yields (image_path, detections [[cls, score, x1, y1, x2, y2], ...])."""
    with activate(cfg):
        dataset = create('TestDataset')()
        dataset.set_images(images)
        loader = build_loader(create('TestReader'), dataset, 0)
    detector.eval()
    with paddle.no_grad():
        for data in loader:
            out = detector(data)
            dets, nums = out['bbox'].numpy(), out['bbox_num'].numpy()
            start = 0
            for i, im_id in enumerate(data['im_id'].numpy().ravel()):
                d = dets[start:start + nums[i]]
                start += nums[i]
                yield images[int(im_id)], d[d[:, 0] >= 0]


def draw_detections(image_path, dets, class_names, out_path, threshold=0.5):
    image = Image.open(image_path).convert('RGB')
    draw = ImageDraw.Draw(image)
    kept = 0
    for cls, score, x1, y1, x2, y2 in dets:
        if score < threshold:
            continue
        kept += 1
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
        color = COLORS[int(cls) % len(COLORS)]
        draw.rectangle([x1, y1, x2, y2], outline=color, width=2)
        label = '{} {:.2f}'.format(class_names[int(cls)], score)
        tw = draw.textlength(label)
        ty = max(0, y1 - 11)
        draw.rectangle([x1, ty, x1 + tw + 2, ty + 11], fill=color)
        draw.text((x1 + 1, ty), label, fill=(255, 255, 255))
    os.makedirs(os.path.dirname(out_path) or '.', exist_ok=True)
    image.save(out_path)
    return kept
