"""tools/train.py, tools/eval.py and tools/infer.py on real demo data with a
real (tiny) YOLOv3: training lowers the loss, checkpoints are written and
scored, the evaluator's APs are right, bad input stops before any training
step, and only the optimised loss stops a run when it is not finite."""
import functools
import json
import os
import shutil

import numpy as np
import paddle
import pytest

from conftest import (STUDENT, assert_same_results, evaluate_independently,
                      script, tiny_opts)
from detdistill.errors import NonFiniteLossError, VOCDataError
from detdistill.config import load_config

from detdistill.engine import Trainer
from detdistill.engine.checkpoint import load_checkpoint
from detdistill.engine.evaluator import VOCEvaluator


def test_train_steps_lower_the_loss(demo_voc, tmp_path):
    cfg = load_config(STUDENT, tiny_opts(demo_voc, str(tmp_path)))
    trainer = Trainer(cfg)
    for _ in range(100):  # past the LR warmup
        trainer.lr.step()
    batch = next(iter(trainer.loader))
    model = trainer.detector
    model.train()
    losses = []
    for _ in range(10):
        loss = model(batch)['loss']
        losses.append(float(loss))
        loss.backward()
        trainer.optimizer.step()
        trainer.optimizer.clear_grad()
    assert losses[-1] < 0.8 * losses[0], losses


def test_train_eval_infer_cli(demo_voc, tmp_path, capsys):
    eval_tool = script('tools/eval.py')
    infer = script('tools/infer.py')
    train = script('tools/train.py')
    save = str(tmp_path / 'out')
    vdl = str(tmp_path / 'vdl')
    # Two epochs barely move the weights: keep every candidate box, so that
    # some land on objects by chance and the APs are not all zero.
    keep_all = ['BBoxPostProcess.decode.conf_thresh=0.0',
                'BBoxPostProcess.nms.score_threshold=0.0',
                'BBoxPostProcess.nms.keep_top_k=400']
    train.main(['-c', STUDENT, '--eval', '--use_vdl', '--vdl_log_dir', vdl,
                '-o'] + tiny_opts(demo_voc, save, 2) + keep_all)
    run = os.path.join(save, 'yolov3_mobilenet_v1_demo')
    hist = [json.loads(line) for line in open(os.path.join(run,
                                                           'history.jsonl'))]
    evals = [r for r in hist if r['kind'] == 'eval']
    assert [r['step'] for r in evals] == [8, 16]
    # a whole pair per checkpoint (load_checkpoint refuses a mixed one), at
    # the step it names: the epochs', the final one (the last epoch's
    # weights) and the best (the first eval with the highest 11-point mAP)
    ckpt = {name: load_checkpoint(os.path.join(run, name))
            for name in ('0', '1', 'best_model', 'model_final')}
    best = max(evals, key=lambda r: r['mAP']['11point'])['step']
    assert {name: training['state']['step'] for name, (_, training)
            in ckpt.items()} == {'0': 8, '1': 16, 'best_model': best,
                                 'model_final': 16}
    for name, same_as in (('model_final', '1'),
                          ('best_model', '0' if best == 8 else '1')):
        for k, v in ckpt[name][0].items():
            np.testing.assert_array_equal(
                v.numpy(), ckpt[same_as][0][k].numpy(), err_msg=name + k)
    assert os.path.getsize(os.path.join(run, 'curves.png')) > 1000
    _assert_visualdl_matches_history(vdl, hist)
    out_json = str(tmp_path / 'eval.json')
    eval_opts = tiny_opts(demo_voc, save) + keep_all
    res = eval_tool.main(['-c', STUDENT, '--json', out_json, '-o',
                          'weights=' + os.path.join(run, 'model_final')] +
                         eval_opts)
    # what tools/eval.py returns, writes and prints is what the evaluator
    # computes for these weights
    expected = evaluate_independently(STUDENT, eval_opts,
                                      os.path.join(run, 'model_final'))
    assert expected['mAP']['11point'] > 0
    # model_final holds the weights evaluated after the last epoch
    assert hist[-1]['kind'] == 'eval' and hist[-1]['step'] == 16
    assert hist[-1]['mAP'] == pytest.approx(expected['mAP'], rel=1e-9,
                                            abs=1e-15)
    assert list(expected['per_class']) == ['circle', 'ring', 'square',
                                           'cross', 'triangle', 'star']
    assert expected['num_images'] == 8
    assert_same_results(res, expected)
    assert_same_results(json.load(open(out_json)), expected)
    printed = capsys.readouterr().out.splitlines()
    table = printed[printed.index('{:<16}{:>10}{:>10}'.format(
        'class', 'AP 11pt', 'AP area')) + 1:][:7]
    rows = [(name, 100 * ap['11point'], 100 * ap['area'])
            for name, ap in expected['per_class'].items()]
    rows.append(('mAP', 100 * expected['mAP']['11point'],
                 100 * expected['mAP']['area']))
    assert [line.split()[0] for line in table] == [r[0] for r in rows]
    for line, (name, ap11, area) in zip(table, rows):
        assert [float(x) for x in line.split()[1:]] == pytest.approx(
            [ap11, area], abs=0.005 + 1e-9), line
    img = os.path.join(demo_voc, open(os.path.join(
        demo_voc, 'test.txt')).readline().split()[0])
    written = infer.main(['-c', STUDENT, '--infer_img', img, '--output_dir',
                          str(tmp_path / 'vis'), '--draw_threshold', '0.0',
                          '-o', 'weights=' + os.path.join(run, 'model_final'),
                          'TestDataset.anno_path=' + os.path.join(
                              demo_voc, 'label_list.txt')])
    assert len(written) == 1 and os.path.getsize(written[0]) > 1000


def _assert_visualdl_matches_history(logdir, hist):
    """The VisualDL scalars, read back, are the run's: per step, each loss
    averages to history.jsonl's value over each log window (log_iter 2), the
    LR follows the warmup by hand, and eval/mAP_* are history's eval mAPs in
    percent. VisualDL stores float32."""
    from visualdl import LogReader
    files = [f for f in os.listdir(logdir) if f.startswith('vdlrecords')]
    assert len(files) == 1
    reader = LogReader(file_path=os.path.join(logdir, files[0]))

    def scalars(tag):
        return {r.id: r.value for r in reader.get_data('scalar', tag)}

    f32 = functools.partial(pytest.approx, rel=1e-6, abs=1e-9)
    train = [r for r in hist if r['kind'] == 'train']
    assert [r['step'] for r in train] == list(range(2, 17, 2))
    losses = [k for k in train[0] if k.startswith('loss')]
    assert 'loss' in losses and len(losses) > 1
    for k in losses:
        per_step = scalars('train/' + k)
        assert sorted(per_step) == list(range(1, 17)), k
        for r in train:
            assert r[k] == f32((per_step[r['step'] - 1] +
                                per_step[r['step']]) / 2), (k, r['step'])
    # LinearWarmup from 0 over 100 steps to base_lr 0.01: step s runs at
    # 0.01 * (s - 1) / 100
    lr = scalars('train/lr')
    assert lr == f32({s: 0.01 * (s - 1) / 100 for s in range(1, 17)})
    assert [r['lr'] for r in train] == f32([lr[r['step']] for r in train])
    evals = [r for r in hist if r['kind'] == 'eval']
    for kind in ('11point', 'area'):
        assert scalars('eval/mAP_' + kind) == f32(
            {r['step']: 100 * r['mAP'][kind] for r in evals})


def _ranked_ap(hits, misses, num_gt):
    """VOC AP, both kinds, of a class whose ranked detections are `misses`
    false positives followed by `hits` true positives (each a distinct
    ground-truth box of `num_gt`), by hand: the i-th hit has precision
    i / (misses + i) at recall i / num_gt. Area: the sum of precision times
    each recall step (ppdet does not take the precision envelope). 11-point:
    the best precision at recall >= t is the last hit's, for every
    t in 0, 0.1, ..., 1 up to the final recall, else 0."""
    if hits == 0:
        return 0.0, 0.0
    area = sum(i / (misses + i) for i in range(1, hits + 1)) / num_gt
    reached = sum(1 for j in range(11) if not hits / num_gt < j / 10.)
    return hits / (misses + hits) * reached / 11., area


def test_evaluator_known_cases(demo_voc, tmp_path):
    """Detections built from the ground truth, with known hits and misses:
    perfect; one class dropped; every other box shifted by half its width
    (IoU 1/3 < 0.5: a false positive, and its object missed); every other box
    given the next class. Misses score 0.95, hits 0.9, so each class ranks
    its misses first and its AP follows by hand (_ranked_ap)."""
    cfg = load_config(STUDENT, tiny_opts(demo_voc, str(tmp_path)))
    trainer = Trainer(cfg, mode='eval')
    loader = trainer.eval_loader
    names = trainer.class_names
    cases = ('perfect', 'dropped', 'shifted', 'relabelled')
    evs = {c: VOCEvaluator(names) for c in cases}
    num_gt = np.zeros(6, int)
    hits = {c: np.zeros(6, int) for c in cases[2:]}
    misses = {c: np.zeros(6, int) for c in cases[2:]}
    n = 0
    for data in loader:
        dets = {c: [] for c in cases}
        nums = {c: [] for c in cases}
        for i, (box, cls) in enumerate(zip(data['gt_bbox'], data['gt_class'])):
            assert data['difficult'][i].numpy().sum() == 0  # all GT count
            h, w = data['scale_factor'].numpy()[i]
            img = {c: [] for c in cases}
            for b, c in zip(box.numpy() / [w, h, w, h], cls.numpy().ravel()):
                c = int(c)
                num_gt[c] += 1
                img['perfect'].append([c, 0.9] + list(b))
                if c != 0:
                    img['dropped'].append([c, 0.9] + list(b))
                miss = n % 2 == 1
                n += 1
                shift = (b[2] - b[0]) / 2 if miss else 0
                img['shifted'].append([c, 0.95 if miss else 0.9, b[0] + shift,
                                       b[1], b[2] + shift, b[3]])
                hits['shifted'][c] += not miss
                misses['shifted'][c] += miss
                label = (c + 1) % 6 if miss else c
                img['relabelled'].append([label, 0.95 if miss else 0.9] +
                                         list(b))
                hits['relabelled'][c] += not miss
                misses['relabelled'][label] += miss
            for c in cases:
                dets[c] += img[c]
                nums[c].append(len(img[c]))
        for c in cases:
            evs[c].update(data, {'bbox': np.array(dets[c], 'float32').reshape(
                -1, 6), 'bbox_num': np.array(nums[c])})
    res = {c: evs[c].accumulate() for c in cases}
    assert (num_gt > 0).all() and n == num_gt.sum()
    assert res['perfect']['mAP'] == {'11point': 1.0, 'area': 1.0}
    # dropped: class 0 scores 0, the 5 others 1
    assert res['dropped']['per_class'][names[0]] == {'11point': 0.0,
                                                     'area': 0.0}
    for name in names[1:]:
        assert res['dropped']['per_class'][name] == {'11point': 1.0,
                                                     'area': 1.0}
    for kind in ('11point', 'area'):
        assert res['dropped']['mAP'][kind] == pytest.approx(5 / 6, abs=1e-12)
    for case in ('shifted', 'relabelled'):
        expected = [_ranked_ap(hits[case][c], misses[case][c], num_gt[c])
                    for c in range(6)]
        for c, name in enumerate(names):
            got = res[case]['per_class'][name]
            assert (got['11point'], got['area']) == pytest.approx(
                expected[c], abs=1e-12), (case, name)
        for k, kind in enumerate(('11point', 'area')):
            assert res[case]['mAP'][kind] == pytest.approx(
                np.mean([e[k] for e in expected]), abs=1e-12), (case, kind)
        # the cases are not degenerate: every class has hits and misses
        assert (hits[case] > 0).all() and (misses[case] > 0).all()


def test_bad_dataset_stops_before_training(demo_voc, tmp_path):
    data = str(tmp_path / 'data')
    shutil.copytree(demo_voc, data)
    first = open(os.path.join(data, 'trainval.txt')).readline().split()[0]
    with open(os.path.join(data, first), 'wb') as f:
        f.write(b'\xff\xd8\xff\xe0 not really a jpeg')
    cfg = load_config(STUDENT, tiny_opts(data, str(tmp_path)))
    with pytest.raises(VOCDataError, match=os.path.basename(first)):
        Trainer(cfg)


# -- the guard against divergence --------------------------------------------

def test_only_the_optimised_loss_is_guarded(demo_voc, tmp_path):
    trainer = Trainer(load_config(STUDENT, tiny_opts(demo_voc,
                                                     str(tmp_path))))
    inf = paddle.to_tensor(float('inf'))
    trainer._check_finite({'loss': paddle.to_tensor(1.5),
                           'teacher_loss': inf})  # log-only: no stop
    with pytest.raises(NonFiniteLossError,
                       match=r'step 1 \(epoch 0\): loss=inf, distill_l2=inf'):
        trainer._check_finite({'loss': inf, 'det_loss': paddle.to_tensor(1.),
                               'distill_l2': inf})


def test_an_unrelated_error_is_not_called_divergence(demo_voc, tmp_path):
    """An error whose text contains 'nan' (here: a missing input named
    'nan_check') with finite weights goes up as it is."""
    trainer = Trainer(load_config(STUDENT, tiny_opts(demo_voc,
                                                     str(tmp_path))))

    class Broken(paddle.nn.Layer):
        def forward(self, data):
            raise ValueError("input 'nan_check' is missing")
    with pytest.raises(ValueError, match="input 'nan_check' is missing"):
        trainer._forward(Broken(), {})
