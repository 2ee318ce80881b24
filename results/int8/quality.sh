#!/bin/bash
# FP32 vs PTQ vs QAT on the converged data (one seed), each step logged
set -x
cd /work/wt-int8
export PYTHONPATH=/work/wt-int8
P="nice -n 10 /work/main/.venv/bin/python"
C=configs/converged/yolov3_mobilenet_v1_converged.yml
D=/work/main/dataset/converged_voc
O="TrainDataset.dataset_dir=$D EvalDataset.dataset_dir=$D TestDataset.anno_path=$D/label_list.txt save_dir=/tmp/int8/meas/out"
W=/tmp/int8/meas/l2_s0_fp32
timeout 900 $P tools/eval.py -c $C --json /tmp/int8/meas/fp32.json -o weights=$W $O
timeout 900 $P tools/quantize.py -c $C --mode ptq --calib_images 64 -o weights=$W $O
timeout 900 $P tools/eval.py -c $C --json /tmp/int8/meas/ptq.json -o weights=/tmp/int8/meas/out/yolov3_mobilenet_v1_converged_ptq/int8 $O
timeout 1200 $P tools/quantize.py -c $C --mode qat -o weights=$W $O epoch=1 LearningRate.base_lr=0.0001 log_iter=50 Distill.teacher.compile=false
timeout 900 $P tools/eval.py -c $C --json /tmp/int8/meas/qat.json -o weights=/tmp/int8/meas/out/yolov3_mobilenet_v1_converged_qat/int8 $O
echo ALLDONE
