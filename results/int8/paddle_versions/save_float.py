"""Random-init (paddle.seed(0)) demo student weights -> argv[1] (.pdparams)."""
import sys, paddle
from detdistill.config import load_config, build_model
paddle.seed(0)
m = build_model(load_config('configs/demo/yolov3_mobilenet_v1_demo.yml'))
paddle.save(m.state_dict(), sys.argv[1]); print('saved', sys.argv[1])
