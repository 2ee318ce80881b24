#!/bin/bash
# Speed only: the full-size student (YOLOv3-MobileNetV1 x1.0, 608 px), freshly
# initialised (seed of the config), calibrated on 8 demo images: no mAP here.
cd /work/wt-int8
export PYTHONPATH=/work/wt-int8
P="nice -n 10 /work/main/.venv/bin/python"
C=configs/yolov3_mobilenet_v1_voc.yml
V=/tmp/int8/voc
O="TrainDataset.dataset_dir=$V TrainDataset.anno_path=trainval.txt TrainDataset.label_list=label_list.txt EvalDataset.dataset_dir=$V EvalDataset.anno_path=test.txt EvalDataset.label_list=label_list.txt TestDataset.anno_path=$V/label_list.txt num_classes=6 save_dir=/tmp/int8/full"
uptime
timeout 900 $P -c "
import paddle
from detdistill.config import load_config
from detdistill.engine import build_detector
cfg = load_config('$C', ['num_classes=6'])
paddle.save(build_detector(cfg).state_dict(), '/tmp/int8/full_init.pdparams')"
timeout 900 $P tools/quantize.py -c $C --mode ptq --calib_images 8 -o weights=/tmp/int8/full_init $O
timeout 1500 $P tools/dev/int8_speed.py -c $C --weights fp32=/tmp/int8/full_init ptq=/tmp/int8/full/yolov3_mobilenet_v1_voc_ptq/int8 --images 8 --rounds 3 --out_dir /tmp/int8/full/speed -o $O
timeout 1500 $P tools/dev/ort_int8_probe.py --model_dir /tmp/int8/full/speed/ptq --float_dir /tmp/int8/full/speed/fp32 --images $V/VOCdevkit/VOC2012/JPEGImages --calib 8 --time 8 --rounds 3 --out /tmp/int8/full/probe
uptime
echo ALLDONE
