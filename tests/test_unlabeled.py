"""Distillation with extra unlabeled images, on the real demo data: an
unlabeled batch reaches only the distillation loss, the unlabeled stream is
part of exact resume, bad files are named before step 1, and both
--unlabeled_list and --unlabeled_dir work through distill.py."""
import json
import os
import shutil

import numpy as np
import paddle
import pytest
from PIL import Image

from conftest import ROOT, STUDENT, TEACHER, script, tiny_opts
from detdistill.errors import ConfigError, VOCDataError
from detdistill.config import build_model, load_config
from detdistill.data.unlabeled import (MixedBatchSampler, UnlabeledDataset,
                                       without_gt_ops)

from detdistill.distill.distiller import build_distill_trainer
from detdistill.engine.trainer import epoch_seed

RUN = 'yolov3_mobilenet_v1_demo'


def _images(demo_voc, split):
    with open(os.path.join(demo_voc, split + '.txt')) as f:
        return [line.split()[0] for line in f if line.strip()]


def _trainer(demo_voc, tmp_path, teacher_weights, *opts):
    cfg = load_config(STUDENT, tiny_opts(demo_voc, str(tmp_path)) +
                      list(opts))
    student, teacher = build_model(cfg), build_model(load_config(TEACHER))
    teacher.set_state_dict(paddle.load(teacher_weights))
    return build_distill_trainer(cfg, student, teacher)


def test_unlabeled_images_get_distillation_loss_only(
        demo_voc, tmp_path, teacher_weights, unlabeled_list):
    trainer = _trainer(demo_voc, tmp_path, teacher_weights,
                       'unlabeled_list=' + unlabeled_list,
                       'unlabeled_batch_size=3',
                       'unlabeled_distill_weight=2.0',
                       'distill_loss_weight=0.01')
    distiller = trainer.model
    distiller.train()
    labeled, unlabeled = next(iter(trainer._epoch_batches(0)))
    # the unlabeled batch went through the same resize/normalise policy but
    # carries no ground truth, real or made up (RandomCrop's fake boxes)
    assert sorted(unlabeled) == ['im_id', 'im_shape', 'image', 'scale_factor']
    assert unlabeled['image'].shape == [3, 3, 160, 160]
    assert 'target0' in labeled

    out = distiller((labeled, unlabeled))
    # the detection loss is the student's loss on the labeled batch alone
    alone = distiller.student(labeled)['loss']
    assert float(out['det_loss']) == float(alone)

    # the unlabeled term, computed independently: a full training forward of
    # the student (given the labeled targets, which the head outputs do not
    # depend on) and an eval-mode teacher forward, recorded by name
    from detdistill.distill.pairing import OutputRecorder
    names = [s for s, _ in distiller.losses[0].pairs]
    targets = {k: v for k, v in labeled.items() if k.startswith('target') or
               k.startswith('gt_')}
    with OutputRecorder(distiller.student, names) as s_rec:
        distiller.student(dict(unlabeled, **{
            k: v[:3] for k, v in targets.items()}))
    with paddle.no_grad(), OutputRecorder(distiller.teacher.model,
                                             names) as t_rec:
        distiller.teacher.model(unlabeled)
    expected = sum(float(distiller.losses[0].module(s_rec.outputs[n],
                                                t_rec.outputs[n])['l2'])
                   for n in names)
    assert float(out['distill_loss_unlabeled']) == pytest.approx(
        2.0 * 0.01 * expected, rel=1e-6)
    assert float(out['loss']) == pytest.approx(
        float(out['det_loss']) + float(out['distill_loss']) +
        float(out['distill_loss_unlabeled']), rel=1e-6)


def test_unlabeled_weight_zero_leaves_the_labeled_loss(
        demo_voc, tmp_path, teacher_weights, unlabeled_list):
    trainer = _trainer(demo_voc, tmp_path, teacher_weights,
                       'unlabeled_list=' + unlabeled_list,
                       'unlabeled_distill_weight=0',
                       'distill_loss_weight=0.01')
    distiller = trainer.model
    distiller.train()
    labeled, unlabeled = next(iter(trainer._epoch_batches(0)))
    with_u = distiller((labeled, unlabeled))
    without = distiller(labeled)
    assert float(with_u['distill_loss_unlabeled']) == 0.
    assert 'distill_loss_unlabeled' not in without
    for k in ('loss', 'det_loss', 'distill_loss'):
        assert float(with_u[k]) == float(without[k]), k


def _unlabeled_stream(demo_voc, unlabeled_images, batch, epochs, fresh):
    """The unlabeled index batches of `epochs` labeled epochs of 8 steps:
    from one sampler, or (fresh) a new sampler per epoch, as a resumed run
    builds it."""
    from paddle.io import DistributedBatchSampler
    labeled_items = list(range(32))

    def sampler():
        return MixedBatchSampler(
            DistributedBatchSampler(labeled_items, 4, shuffle=True,
                                    drop_last=True),
            DistributedBatchSampler(list(range(unlabeled_images)), batch,
                                    shuffle=True, drop_last=True),
            lambda e: epoch_seed(0, e))

    s = sampler()
    stream = []
    for e in range(epochs):
        if fresh:
            s = sampler()
        s.start_epoch(e)
        stream += [[i - 32 for i in b[4:]] for b in s]
    return stream


def test_unlabeled_order_depends_on_seed_and_position_only(demo_voc):
    # 13 unlabeled batches of 3 per unlabeled epoch, 8 labeled steps per
    # epoch: epochs start mid unlabeled epoch and wrap inside an epoch
    one = _unlabeled_stream(demo_voc, 40, 3, 4, fresh=False)
    resumed = _unlabeled_stream(demo_voc, 40, 3, 4, fresh=True)
    assert one == resumed
    assert len(one) == 32
    # every unlabeled epoch shows 39 distinct images (drop_last leaves one),
    # each in its own order
    first, second = sum(one[:13], []), sum(one[13:26], [])
    assert len(set(first)) == 39 and len(set(second)) == 39
    assert first != second


def _history(save):
    with open(os.path.join(save, RUN, 'history.jsonl')) as f:
        return [json.loads(line) for line in f]


def test_resume_with_unlabeled_stream_is_exact(demo_voc, tmp_path,
                                               teacher_weights):
    distill = script('slim/distillation/distill.py')
    # all 40 demo images as unlabeled, 3 per step: 13 unlabeled batches per
    # unlabeled epoch, so the resumed epoch starts at unlabeled batch 8
    lst = str(tmp_path / 'unlabeled.txt')
    with open(lst, 'w') as f:
        f.write(''.join(p + '\n' for p in _images(demo_voc, 'trainval') +
                        _images(demo_voc, 'test')))
    full, part = str(tmp_path / 'full'), str(tmp_path / 'part')
    base = ['-c', STUDENT, '-t', TEACHER, '--teacher_pretrained',
            teacher_weights, '--unlabeled_list', lst, '-o']
    w = {'distill_loss_weight': 0.01, 'unlabeled_batch_size': 3}
    distill.main(base + tiny_opts(demo_voc, full, 2, **w))
    distill.main(base + tiny_opts(demo_voc, part, 1, **w))
    distill.main(['-r', os.path.join(part, RUN, '0')] + base +
                 tiny_opts(demo_voc, part, 2, **w))
    a = [r for r in _history(full) if r['kind'] == 'train']
    b = [r for r in _history(part) if r['kind'] == 'train']
    assert [r['step'] for r in a] == [r['step'] for r in b] == \
        list(range(2, 17, 2))
    for ra, rb in zip(a, b):
        for k in ('loss', 'det_loss', 'distill_loss',
                  'distill_loss_unlabeled'):
            assert ra[k] == pytest.approx(rb[k], rel=1e-5), (ra['step'], k)
    wa = paddle.load(os.path.join(full, RUN, 'model_final.pdparams'))
    wb = paddle.load(os.path.join(part, RUN, 'model_final.pdparams'))
    for k in wa:
        np.testing.assert_allclose(wa[k].numpy(), wb[k].numpy(), rtol=1e-5,
                                   atol=1e-6, err_msg=k)


def test_unlabeled_dir_trains_through_distill_main(demo_voc, tmp_path,
                                                   teacher_weights):
    """--unlabeled_dir: the folder's images, sorted, are the unlabeled set
    (other files are not images); the step-1 losses the run logs are the
    distiller's on the first labeled and unlabeled batches of epoch 0, from
    the student it started with (--pretrained)."""
    distill = script('slim/distillation/distill.py')
    folder = tmp_path / 'photos'
    folder.mkdir()
    for p in _images(demo_voc, 'test')[:5]:
        shutil.copy(os.path.join(demo_voc, p), str(folder))
    (folder / 'notes.txt').write_text('not an image')
    start = str(tmp_path / 'student.pdparams')
    paddle.seed(5)
    paddle.save(build_model(load_config(STUDENT)).state_dict(), start)
    save = str(tmp_path / 'out')
    trainer = distill.main(
        ['-c', STUDENT, '-t', TEACHER, '--teacher_pretrained',
         teacher_weights, '--pretrained', start, '--unlabeled_dir',
         str(folder), '-o'] +
        tiny_opts(demo_voc, save, 1, log_iter=1, distill_loss_weight=0.01,
                  unlabeled_batch_size=2))
    sampler = trainer.loader.batch_sampler
    assert len(sampler.unlabeled) == 2  # 5 images, 2 per step, drop_last
    assert trainer.loader.dataset.unlabeled.paths == sorted(
        str(p) for p in folder.iterdir() if p.suffix == '.jpg')
    train = [r for r in _history(save) if r['kind'] == 'train']
    assert [r['step'] for r in train] == list(range(1, 9))
    distiller = trainer.model
    final = {k: v.numpy() for k, v in distiller.student.state_dict().items()}
    distiller.student.set_state_dict(paddle.load(start))
    distiller.train()
    with paddle.no_grad():
        out = distiller(next(iter(trainer._epoch_batches(0))))
    for k in ('loss', 'det_loss', 'distill_loss', 'distill_loss_unlabeled'):
        assert train[0][k] == pytest.approx(float(out[k]), rel=1e-5), k
    saved = paddle.load(os.path.join(save, RUN, 'model_final.pdparams'))
    for k, v in saved.items():  # the run's last weights
        np.testing.assert_array_equal(v.numpy(), final[k], err_msg=k)


def test_bad_unlabeled_files_are_named_before_step_one(
        demo_voc, tmp_path, teacher_weights):
    distill = script('slim/distillation/distill.py')
    good = _images(demo_voc, 'test')[:2]
    broken = tmp_path / 'broken.jpg'
    data = open(os.path.join(demo_voc, good[0]), 'rb').read()
    broken.write_bytes(data[:len(data) // 3])  # truncated JPEG
    lst = str(tmp_path / 'unlabeled.txt')
    with open(lst, 'w') as f:
        f.write('{}\nmissing/nothing.jpg\n{}\n{}\n'.format(
            good[0], broken, good[1]))
    with pytest.raises(VOCDataError) as e:
        _trainer(demo_voc, tmp_path / 'a', teacher_weights,
                 'unlabeled_list=' + lst)
    msg = str(e.value)
    assert msg.startswith('2 problem(s) in the unlabeled images of ' + lst)
    assert os.path.join(demo_voc, 'missing/nothing.jpg') + \
        ': image file not found' in msg
    assert str(broken) + ': cannot decode image' in msg
    # through the CLI: exit 1 before any step was taken
    save = str(tmp_path / 'out')
    with pytest.raises(SystemExit) as e:
        distill.main(['-c', STUDENT, '-t', TEACHER, '--teacher_pretrained',
                      teacher_weights, '--unlabeled_list', lst, '-o'] +
                     tiny_opts(demo_voc, save, 1))
    assert e.value.code == 1
    assert not os.path.exists(os.path.join(save, RUN, 'history.jsonl'))


def test_unlabeled_list_problems_are_named(demo_voc, tmp_path,
                                           teacher_weights):
    lst = tmp_path / 'unlabeled.txt'
    lst.write_text('a.jpg b.xml\n')
    with pytest.raises(VOCDataError, match=r'unlabeled.txt line 1: expected '
                       r'one image path'):
        _trainer(demo_voc, tmp_path, teacher_weights,
                 'unlabeled_list=' + str(lst))
    with pytest.raises(VOCDataError, match='no images'):
        _trainer(demo_voc, tmp_path, teacher_weights,
                 'unlabeled_dir=' + str(tmp_path))
    lst.write_text(_images(demo_voc, 'test')[0] + '\n')
    with pytest.raises(VOCDataError, match='unlabeled_batch_size 4 is '
                       'larger than the 1 unlabeled images'):
        _trainer(demo_voc, tmp_path, teacher_weights,
                 'unlabeled_list=' + str(lst))
    with pytest.raises(ConfigError, match='Distill.unlabeled.batch_size must '
                       'be a positive integer, got 0'):
        _trainer(demo_voc, tmp_path, teacher_weights,
                 'unlabeled_list=' + str(lst), 'unlabeled_batch_size=0')


def test_plain_training_refuses_unlabeled_images(demo_voc, tmp_path,
                                                 unlabeled_list, log_lines):
    train = script('tools/train.py')
    with pytest.raises(SystemExit) as e:
        train.main(['-c', STUDENT, '-o'] + tiny_opts(
            demo_voc, str(tmp_path)) + [
            'Distill.unlabeled.list=' + unlabeled_list])
    assert e.value.code == 1
    assert 'ConfigError: unlabeled images (Distill.unlabeled) train by ' \
        'distillation only: use slim/distillation/distill.py' in log_lines


def test_gt_ops_are_left_out_of_the_unlabeled_pipeline(demo_voc):
    from ppdet.core.workspace import create
    from detdistill.config import activate
    cfg = load_config(os.path.join(ROOT, 'configs/yolov3_mobilenet_v1_voc.yml'))
    with activate(cfg):
        reader = create('TrainReader')
    sample_ops = without_gt_ops(reader._sample_transforms)
    batch_ops = without_gt_ops(reader._batch_transforms)
    assert [type(f).__name__ for f in sample_ops.transforms_cls] == [
        'Decode', 'Mixup', 'RandomDistort', 'RandomExpand', 'RandomCrop',
        'RandomFlip']
    assert [type(f).__name__ for f in batch_ops.transforms_cls] == [
        'BatchRandomResize', 'NormalizeImage', 'Permute']
    # the full VOC augmentation (expand, crop, multi-scale) on real images
    paths = [os.path.join(demo_voc, p) for p in _images(demo_voc, 'test')]
    ds = UnlabeledDataset(paths, sample_ops)
    np.random.seed(0)
    samples = [ds[i] for i in range(4)]
    for s in samples:
        s.pop('unlabeled_sample')
    batch = batch_ops(samples)
    assert sorted(batch) == ['im_id', 'im_shape', 'image', 'scale_factor']
    assert batch['image'].shape[:2] == (4, 3)
    assert batch['image'].shape[2] in reader._batch_transforms.transforms_cls[
        0].target_size


def test_pseudo_label_writes_voc_that_validation_accepts(
        demo_voc, tmp_path, teacher_weights):
    pseudo_label = script('tools/pseudo_label.py')
    from detdistill.data.voc import parse_voc_xml, validate_voc_list
    from detdistill.infer import predict
    from detdistill.weights import load_weights
    images = tmp_path / 'images'
    images.mkdir()
    for p in _images(demo_voc, 'test')[:4]:
        shutil.copy(os.path.join(demo_voc, p), str(images))
    labels = os.path.join(demo_voc, 'label_list.txt')
    opts = ['weights=' + teacher_weights, 'TestDataset.anno_path=' + labels]
    out = str(tmp_path / 'annotations')
    written = pseudo_label.main(['-c', TEACHER, '-o'] + opts + [
        '--infer_dir', str(images), '--out_dir', out, '--threshold', '0.02'])
    names = open(labels).read().split()
    # the expected objects, from the teacher's raw detections
    cfg = load_config(TEACHER, opts)
    teacher = build_model(cfg)
    load_weights(teacher, teacher_weights)
    paths = sorted(str(p) for p in images.iterdir())
    expected = {}
    for path, dets in predict(cfg, teacher, paths):
        with Image.open(path) as im:
            w, h = im.size
        objs = []
        for c, s, x1, y1, x2, y2 in dets:
            box = [int(round(min(max(v, 0), lim))) for v, lim in
                   ((x1, w), (y1, h), (x2, w), (y2, h))]
            if s >= 0.02 and box[2] > box[0] and box[3] > box[1]:
                objs.append((names[int(c)], box))
        expected[os.path.basename(path)] = objs
    assert [os.path.basename(x) for x, _ in written] == [
        os.path.basename(p).replace('.jpg', '.xml') for p in paths]
    total = 0
    for xml, n in written:
        ann = parse_voc_xml(xml, names)
        got = [(o['name'], [int(v) for v in o['bbox']])
               for o in ann['objects']]
        assert got == expected[ann['filename']]
        assert n == len(got)
        total += n
    assert total > 0
    # our own validation accepts them as a training list
    with open(str(tmp_path / 'pseudo.txt'), 'w') as f:
        for p in paths:
            stem = os.path.splitext(os.path.basename(p))[0]
            f.write('images/{}.jpg annotations/{}.xml\n'.format(stem, stem))
    report = validate_voc_list(str(tmp_path), 'pseudo.txt', labels)
    assert not report.problems
    assert report.num_images == 4 and report.num_objects == total
