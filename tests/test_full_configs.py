"""The full-size configs build the architectures of PaddleDetection 2.6's
model zoo. Checked once against PaddleDetection's own config files
(release/2.6 yolov3_mobilenet_v1_270e_voc and yolov3_r34_270e_coco, built with
ppdet: identical state-dict names and shapes, except the teacher's 80-class
head); these numbers pin that result."""
from conftest import ROOT
from detdistill.config import build_model, load_config


def _shapes(name):
    cfg = load_config('{}/configs/{}.yml'.format(ROOT, name))
    return {k: list(v.shape) for k, v in build_model(cfg).state_dict().items()}


def test_student_matches_yolov3_mobilenet_v1_270e_voc():
    s = _shapes('yolov3_mobilenet_v1_voc')
    assert len(s) == 241
    assert s['backbone.conv1._conv.weight'] == [32, 3, 3, 3]
    assert s['neck.yolo_block.0.conv_module.conv0.conv.weight'] == \
        [512, 1024, 1, 1]
    assert s['yolo_head.yolo_output.0.weight'] == [75, 1024, 1, 1]
    assert s['yolo_head.yolo_output.2.weight'] == [75, 256, 1, 1]


def test_teacher_matches_yolov3_r34_but_for_the_voc_head():
    t = _shapes('yolov3_r34_voc')
    assert len(t) == 291
    assert t['backbone.conv1.conv1.conv.weight'] == [64, 3, 7, 7]
    assert t['backbone.res5.res5c.branch2b.conv.weight'] == [512, 512, 3, 3]
    # the COCO checkpoint has [255, ...] here: re-initialised and reported
    assert t['yolo_head.yolo_output.0.weight'] == [75, 1024, 1, 1]
