#!/bin/bash
cd /work/wt-int8
export PYTHONPATH=/work/wt-int8
D=/work/main/dataset/converged_voc
uptime
timeout 1500 nice -n 10 /work/main/.venv/bin/python tools/dev/int8_speed.py -c configs/converged/yolov3_mobilenet_v1_converged.yml --weights fp32=/tmp/int8/meas/l2_s0_fp32 ptq=/tmp/int8/meas/out/yolov3_mobilenet_v1_converged_ptq/int8 qat=/tmp/int8/meas/out/yolov3_mobilenet_v1_converged_qat/int8 --images 64 --rounds 5 --out_dir /tmp/int8/meas/speed -o TrainDataset.dataset_dir=$D EvalDataset.dataset_dir=$D TestDataset.anno_path=$D/label_list.txt
uptime
for m in ptq qat; do timeout 900 nice -n 10 /work/main/.venv/bin/python tools/eval.py -c configs/converged/yolov3_mobilenet_v1_converged.yml --model_dir /tmp/int8/meas/speed/$m --backend onnxruntime --json /tmp/int8/meas/${m}_onnx.json -o EvalDataset.dataset_dir=$D TestDataset.anno_path=$D/label_list.txt; done
echo ALLDONE
