"""Configs: loading one names a mistyped or unimplemented key and leaves
the others as they were; the full-size configs build the architectures of
PaddleDetection 2.6's model zoo, so its released weights load by name
(docs/weights.md).

The numbers and digests below were derived by building PaddleDetection
release/2.6's own config files with ppdet (yolov3_mobilenet_v1_270e_voc.yml
and yolov3_r34_270e_coco.yml, with their _BASE_ trees) and comparing
state-dict names and shapes with ours: the student is identical (241 keys),
the teacher differs only in the six class-dependent head keys (291 keys;
[255, ...] for COCO's 80 classes, [75, ...] for VOC's 20). The GFL configs
likewise against gfl_r18vd_1x_coco.yml and gfl_r101vd_fpn_mstrain_2x_coco.yml
(and the LD student gfl_slim_ld_r18vd_1x_coco.yml): identical but for
head.gfl_head_cls ([80, ...] vs [20, ...]). The comparison itself (the
last two tests) builds PaddleDetection's config files, vendored unchanged in
tests/data/paddledetection_2.6 (release/2.6, see its README).
"""
import copy
import hashlib
import os

import pytest

from conftest import ROOT, STUDENT, TEACHER
from detdistill.config import activate, build_model, load_config
from detdistill.errors import ConfigError

# (name, shape) lines in state-dict order, sha256 over '\n'-joined
# '<name> <shape>': computed from PaddleDetection's configs (see above).
STUDENT_DIGEST = \
    'a765479bc3de7a885473f59fe5ba016d476fff4a4eb1f31ed7bff96e6220ca8e'
TEACHER_BODY_DIGEST = \
    '61c1d173d5c6a37fee1f18dbb28bc2e9980ddec40bf5bea4de55e62b820cc4c0'
HEAD = ['yolo_head.yolo_output.{}.{}'.format(i, p) for i in range(3)
        for p in ('weight', 'bias')]
GFL_HEAD = ['head.gfl_head_cls.weight', 'head.gfl_head_cls.bias']
# ours -> (PaddleDetection's COCO config, key count, digest without GFL_HEAD)
GFL = {
    'gfl_r18vd_1x_voc': (
        'gfl_r18vd_1x_coco', 173,
        '995a7baf39d21161d8d10b59e645578505f03104d79ccfedb8105f72a4888c66'),
    'gfl_r101vd_fpn_mstrain_2x_voc': (
        'gfl_r101vd_fpn_mstrain_2x_coco', 588,
        '5f8658b1781325717e7db6b43d07eb052fa43f664e25afa2d7c53d1ca1a466e8'),
}
# PaddleDetection release/2.6's configs (with their _BASE_ trees)
PADDLEDETECTION = os.path.join(ROOT, 'tests', 'data', 'paddledetection_2.6',
                               'configs')


# -- loading a config --------------------------------------------------------

def test_config_typo_is_named():
    with pytest.raises(ConfigError, match="did you mean 'use_fine_grained_loss'"):
        load_config(STUDENT, ['use_fine_grained_los=true'])
    with pytest.raises(ConfigError, match="ScaledYOLOv3FPN has no argument "
                       "'channel'"):
        load_config(STUDENT, ['ScaledYOLOv3FPN.channel=32'])


def test_configs_stay_apart():
    """Loading the teacher's config must not change the student's (the
    global-config merge bug of PaddleDetection #5976)."""
    student_cfg, teacher_cfg = load_config(STUDENT), load_config(TEACHER)
    teacher = build_model(teacher_cfg)
    student = build_model(student_cfg)
    assert type(student.backbone).__name__ == 'MobileNet'
    assert type(teacher.backbone).__name__ == 'ScaledResNet'
    assert student.neck._out_channels == [128, 64, 32]
    assert teacher.neck._out_channels == [256, 128, 64]
    with activate(student_cfg) as g:
        assert g['ScaledYOLOv3FPN']['channels'] == 64


@pytest.mark.parametrize('key', ['use_xpu', 'to_static', 'print_flops'])
def test_unimplemented_keys_are_refused_when_set(key):
    with pytest.raises(ConfigError, match='{}: True is not supported'.format(
            key)):
        load_config(STUDENT, ['{}=true'.format(key)])
    load_config(STUDENT, ['{}=false'.format(key)])  # off is fine


# -- the full-size configs are PaddleDetection's -----------------------------

def _shapes(model):
    return {k: [int(d) for d in v.shape] for k, v in
            model.state_dict().items()}


def _digest(shapes, skip=()):
    lines = ['{} {}'.format(k, v) for k, v in shapes.items() if k not in skip]
    return hashlib.sha256('\n'.join(lines).encode()).hexdigest()


@pytest.fixture(scope='module')
def ours():
    return {name: _shapes(build_model(load_config(
        os.path.join(ROOT, 'configs', name + '.yml'))))
        for name in ('yolov3_mobilenet_v1_voc', 'yolov3_r34_voc')}


def test_student_is_yolov3_mobilenet_v1_270e_voc(ours):
    s = ours['yolov3_mobilenet_v1_voc']
    assert len(s) == 241
    assert sum(k.startswith('backbone.') for k in s) == 135
    assert sum(k.startswith('neck.') for k in s) == 100
    assert sum(k.startswith('yolo_head.') for k in s) == 6
    assert s['backbone.conv1._conv.weight'] == [32, 3, 3, 3]
    assert s['backbone.conv6._pointwise_conv._conv.weight'] == \
        [1024, 1024, 1, 1]
    assert s['neck.yolo_block.0.conv_module.conv0.conv.weight'] == \
        [512, 1024, 1, 1]
    # 3 anchors x (5 + 20 classes) = 75 output channels per level
    assert s['yolo_head.yolo_output.0.weight'] == [75, 1024, 1, 1]
    assert s['yolo_head.yolo_output.1.weight'] == [75, 512, 1, 1]
    assert s['yolo_head.yolo_output.2.weight'] == [75, 256, 1, 1]
    assert s['yolo_head.yolo_output.2.bias'] == [75]
    assert _digest(s) == STUDENT_DIGEST


def test_teacher_is_yolov3_r34_with_a_voc_head(ours):
    t = ours['yolov3_r34_voc']
    assert len(t) == 291
    assert sum(k.startswith('backbone.') for k in t) == 185
    assert sum(k.startswith('neck.') for k in t) == 100
    assert t['backbone.conv1.conv1.conv.weight'] == [64, 3, 7, 7]
    assert t['backbone.res5.res5c.branch2b.conv.weight'] == [512, 512, 3, 3]
    assert t['neck.yolo_block.0.conv_module.conv0.conv.weight'] == \
        [512, 512, 1, 1]
    # PaddleDetection's COCO checkpoint has [255, ...] here: --pretrained
    # keeps these six at their initialisation and lists them
    assert t['yolo_head.yolo_output.0.weight'] == [75, 1024, 1, 1]
    assert [k for k in t if k.startswith('yolo_head.')] == HEAD
    assert _digest(t, skip=HEAD) == TEACHER_BODY_DIGEST


@pytest.fixture(scope='module')
def gfl_ours():
    return {name: _shapes(build_model(load_config(
        os.path.join(ROOT, 'configs', name + '.yml')))) for name in GFL}


def test_gfl_configs_are_paddledetection_gfl_with_a_voc_head(gfl_ours):
    for name, (_, count, digest) in GFL.items():
        m = gfl_ours[name]
        assert len(m) == count, name
        assert sum(k.startswith('neck.') for k in m) == 16
        assert sum(k.startswith('head.') for k in m) == 42
        # 20 classes; 4 edges x (reg_max 16 + 1) distribution bins
        assert m['head.gfl_head_cls.weight'] == [20, 256, 3, 3]
        assert m['head.gfl_head_cls.bias'] == [20]
        assert m['head.gfl_head_reg.weight'] == [68, 256, 3, 3]
        assert [k for k in m if k.endswith('scale_reg')] == [
            'head.p{}_feat.scale_reg'.format(i) for i in range(3, 8)]
        assert _digest(m, skip=GFL_HEAD) == digest, name
    assert gfl_ours['gfl_r18vd_1x_voc']['backbone.res5.res5b.branch2b.'
                                        'conv.weight'] == [512, 512, 3, 3]
    assert gfl_ours['gfl_r101vd_fpn_mstrain_2x_voc'][
        'backbone.res4.res4b22.branch2c.conv.weight'] == [1024, 256, 1, 1]


def test_voc_recipe_is_paddledetections(ours):
    """Both full-size configs train with the recipe of PaddleDetection's
    yolov3_mobilenet_v1_270e_voc.yml (its release/2.6 file, read by ppdet's
    own loader): data, metric, schedule and learning rate."""
    theirs = _ppdet_config(os.path.join(
        PADDLEDETECTION, 'yolov3', 'yolov3_mobilenet_v1_270e_voc.yml'))
    for name in ours:
        cfg = load_config(os.path.join(ROOT, 'configs', name + '.yml'))
        for key in ('num_classes', 'metric', 'map_type', 'epoch',
                    'snapshot_epoch'):
            assert cfg[key] == theirs[key], (name, key)
        for split in ('TrainDataset', 'EvalDataset'):
            for key in ('dataset_dir', 'anno_path', 'label_list'):
                assert cfg[split][key] == theirs[split][key], (name, key)
        assert cfg['LearningRate']['base_lr'] == \
            theirs['LearningRate']['base_lr']
        for ours_s, theirs_s in zip(cfg['LearningRate']['schedulers'],
                                    theirs['LearningRate']['schedulers'],
                                    strict=True):
            assert type(ours_s) is type(theirs_s), name
            assert vars(ours_s) == vars(theirs_s), name


# -- the comparison with PaddleDetection's own configs ----------------------

def _ppdet_config(path, build=False):
    """`path` read by ppdet's own load_config (PaddleDetection's _BASE_
    semantics), which merges into one global config: run on a copy of it and
    put the original back. The config, or with `build` the state-dict shapes
    of its architecture."""
    from ppdet.core import workspace
    g = workspace.global_config
    saved = dict(g)
    g.clear()
    g.update({k: v.copy() if isinstance(v, dict) else copy.copy(v)
              for k, v in saved.items()})
    try:
        cfg = workspace.load_config(path)
        if build:
            return _shapes(workspace.create(cfg['architecture']))
        return dict(cfg)
    finally:
        g.clear()
        g.update(saved)


def _ppdet_build(path):
    return _ppdet_config(path, build=True)


def test_same_names_and_shapes_as_paddledetection_configs(ours):
    pd = os.path.join(PADDLEDETECTION, 'yolov3')
    student = _ppdet_build(os.path.join(pd,
                                        'yolov3_mobilenet_v1_270e_voc.yml'))
    assert student == ours['yolov3_mobilenet_v1_voc']
    assert list(student) == list(ours['yolov3_mobilenet_v1_voc'])
    assert _digest(student) == STUDENT_DIGEST

    coco = _ppdet_build(os.path.join(pd, 'yolov3_r34_270e_coco.yml'))
    teacher = ours['yolov3_r34_voc']
    assert list(coco) == list(teacher)
    assert [k for k in coco if coco[k] != teacher[k]] == HEAD
    assert coco['yolo_head.yolo_output.0.weight'] == [255, 1024, 1, 1]
    assert _digest(coco, skip=HEAD) == TEACHER_BODY_DIGEST

    # ppdet's own loader reads our _BASE_ tree the same way ours does
    assert _ppdet_build(os.path.join(
        ROOT, 'configs', 'yolov3_r34_voc.yml')) == teacher


def test_gfl_same_names_and_shapes_as_paddledetection_configs(gfl_ours):
    gfl = os.path.join(PADDLEDETECTION, 'gfl')
    for name, (theirs, _, digest) in GFL.items():
        coco = _ppdet_build(os.path.join(gfl, theirs + '.yml'))
        ours = gfl_ours[name]
        assert list(coco) == list(ours), name
        assert [k for k in coco if coco[k] != ours[k]] == GFL_HEAD, name
        assert coco['head.gfl_head_cls.weight'] == [80, 256, 3, 3]
        assert _digest(coco, skip=GFL_HEAD) == digest, name
    # PaddleDetection's LD-distilled student (LDGFLHead) has the same keys
    ld = _ppdet_build(os.path.join(gfl, 'gfl_slim_ld_r18vd_1x_coco.yml'))
    assert list(ld) == list(gfl_ours['gfl_r18vd_1x_voc'])
    assert _digest(ld, skip=GFL_HEAD) == GFL['gfl_r18vd_1x_voc'][2]
