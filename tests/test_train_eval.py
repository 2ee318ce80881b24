"""tools/train.py, tools/eval.py and tools/infer.py on real demo data with a
real (tiny) YOLOv3: training lowers the loss, checkpoints are written and
scored, bad input stops before any training step."""
import json
import os
import shutil

import numpy as np
import pytest

from conftest import STUDENT, tiny_opts
from detdistill.config import ConfigError, activate, build_model, load_config
from detdistill.data.voc import VOCDataError
from detdistill.engine import NonFiniteLossError, Trainer
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
    import eval as eval_tool
    import infer
    import train
    save = str(tmp_path / 'out')
    vdl = str(tmp_path / 'vdl')
    train.main(['-c', STUDENT, '--eval', '--use_vdl', '--vdl_log_dir', vdl,
                '-o'] + tiny_opts(demo_voc, save, 2))
    assert any(f.startswith('vdlrecords') for f in os.listdir(vdl))
    run = os.path.join(save, 'yolov3_mobilenet_v1_demo')
    for name in ('0', '1', 'best_model', 'model_final'):
        for ext in ('.pdparams', '.pdopt'):
            assert os.path.isfile(os.path.join(run, name + ext)), name + ext
    hist = [json.loads(line) for line in open(os.path.join(run,
                                                           'history.jsonl'))]
    assert [r['step'] for r in hist if r['kind'] == 'eval'] == [8, 16]
    assert os.path.getsize(os.path.join(run, 'curves.png')) > 1000
    out_json = str(tmp_path / 'eval.json')
    res = eval_tool.main(['-c', STUDENT, '--json', out_json, '-o',
                          'weights=' + os.path.join(run, 'model_final')] +
                         tiny_opts(demo_voc, save))
    for kind in ('11point', 'area'):
        assert 0.0 <= res['mAP'][kind] <= 1.0
    assert set(res['per_class']) == {'circle', 'ring', 'square', 'cross',
                                     'triangle', 'star'}
    assert json.load(open(out_json))['num_images'] == 8
    assert 'mAP' in capsys.readouterr().out
    img = os.path.join(demo_voc, open(os.path.join(
        demo_voc, 'test.txt')).readline().split()[0])
    written = infer.main(['-c', STUDENT, '--infer_img', img, '--output_dir',
                          str(tmp_path / 'vis'), '--draw_threshold', '0.0',
                          '-o', 'weights=' + os.path.join(run, 'model_final'),
                          'TestDataset.anno_path=' + os.path.join(
                              demo_voc, 'label_list.txt')])
    assert len(written) == 1 and os.path.getsize(written[0]) > 1000


def test_perfect_predictions_score_one(demo_voc, tmp_path):
    cfg = load_config(STUDENT, tiny_opts(demo_voc, str(tmp_path)))
    trainer = Trainer(cfg, mode='eval')
    loader = trainer.eval_loader
    ev, half = VOCEvaluator(trainer.class_names), \
        VOCEvaluator(trainer.class_names)
    for data in loader:
        dets, nums = [], []
        for i, (box, cls) in enumerate(zip(data['gt_bbox'], data['gt_class'])):
            h, w = data['scale_factor'].numpy()[i]
            for b, c in zip(box.numpy() / [w, h, w, h], cls.numpy().ravel()):
                dets.append([c, 0.9] + list(b))
            nums.append(len(box))
        out = {'bbox': np.array(dets, 'float32'), 'bbox_num': np.array(nums)}
        ev.update(data, out)
        # the same boxes with every other class label wrong
        wrong = out['bbox'].copy()
        wrong[::2, 0] = (wrong[::2, 0] + 1) % 6
        half.update(data, {'bbox': wrong, 'bbox_num': out['bbox_num']})
    assert ev.accumulate()['mAP'] == {'11point': 1.0, 'area': 1.0}
    assert 0.2 < half.accumulate()['mAP']['area'] < 0.8


def test_bad_dataset_stops_before_training(demo_voc, tmp_path):
    data = str(tmp_path / 'data')
    shutil.copytree(demo_voc, data)
    first = open(os.path.join(data, 'trainval.txt')).readline().split()[0]
    with open(os.path.join(data, first), 'wb') as f:
        f.write(b'\xff\xd8\xff\xe0 not really a jpeg')
    cfg = load_config(STUDENT, tiny_opts(data, str(tmp_path)))
    with pytest.raises(VOCDataError, match=os.path.basename(first)):
        Trainer(cfg)


def test_config_typo_is_named():
    with pytest.raises(ConfigError, match="did you mean 'use_fine_grained_loss'"):
        load_config(STUDENT, ['use_fine_grained_los=true'])
    with pytest.raises(ConfigError, match="ScaledYOLOv3FPN has no argument "
                       "'channel'"):
        load_config(STUDENT, ['ScaledYOLOv3FPN.channel=32'])


def test_configs_stay_apart():
    """Loading the teacher's config must not change the student's (the
    global-config merge bug of PaddleDetection #5976)."""
    from conftest import TEACHER
    student_cfg, teacher_cfg = load_config(STUDENT), load_config(TEACHER)
    teacher = build_model(teacher_cfg)
    student = build_model(student_cfg)
    assert type(student.backbone).__name__ == 'MobileNet'
    assert type(teacher.backbone).__name__ == 'ScaledResNet'
    assert student.neck._out_channels == [128, 64, 32]
    assert teacher.neck._out_channels == [256, 128, 64]
    with activate(student_cfg) as g:
        assert g['ScaledYOLOv3FPN']['channels'] == 64


def test_divergence_stops_with_a_clear_error(demo_voc, tmp_path):
    cfg = load_config(STUDENT, tiny_opts(demo_voc, str(tmp_path), 3) + [
        'LearningRate.base_lr=1000000000.0'])
    trainer = Trainer(cfg)
    with pytest.raises(NonFiniteLossError, match='step'):
        trainer.train()
