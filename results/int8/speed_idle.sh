#!/usr/bin/env bash
# INT8 vs float speed on an idle machine: converged and BCCD, 1 and 2 threads
cd /work/main
P=/work/main/.venv/bin/python
uptime
D=/work/main/dataset/converged_voc
timeout 1200 $P tools/dev/int8_speed.py -c configs/converged/yolov3_mobilenet_v1_converged.yml \
  --weights fp32=/work/wt-runs/results/converged/runs/l2_auto_s0/yolov3_mobilenet_v1_converged/model_final \
  ptq=/work/runs/int8/converged/0/yolov3_mobilenet_v1_converged_ptq/int8 \
  qat=/work/runs/int8/converged/0/yolov3_mobilenet_v1_converged_qat/int8 \
  --teacher configs/converged/yolov3_r34_converged.yml=results/converged/runs/teacher_s0/yolov3_r34_converged/model_final \
  --images 64 --rounds 5 --threads 1 2 --out_dir /tmp/speed/converged --md results/int8/converged/SPEED.md \
  -o TrainDataset.dataset_dir=$D EvalDataset.dataset_dir=$D TestDataset.anno_path=$D/label_list.txt > results/int8/converged/speed.log 2>&1
uptime
timeout 1200 $P tools/dev/int8_speed.py -c configs/bccd/yolov3_mobilenet_v1_bccd.yml \
  --weights fp32=/work/runs/bccd/runs/l2_auto_s0/yolov3_mobilenet_v1_bccd/model_final \
  ptq=/work/runs/int8/bccd/0/yolov3_mobilenet_v1_bccd_ptq/int8 \
  qat=/work/runs/int8/bccd/0/yolov3_mobilenet_v1_bccd_qat/int8 \
  --teacher configs/bccd/yolov3_r34_bccd.yml=results/bccd/runs/teacher_s0/yolov3_r34_bccd/model_final \
  --images 64 --rounds 5 --threads 1 2 --out_dir /tmp/speed/bccd --md results/int8/bccd/SPEED.md > results/int8/bccd/speed.log 2>&1
uptime
echo SPEED DONE
