"""Usage (cwd /work/main, PYTHONPATH=/work/main): export_demo.py OUT_ROOT [weights.pdparams]
Builds the demo student (paddle.seed(0)), exports with/without NMS via
detdistill.deploy.export.save_inference_model (no check), and saves a feed
(one demo test image, ExportedDetector.preprocess) plus dygraph reference."""
import os, sys
import numpy as np
import paddle
from detdistill.config import load_config, build_model
from detdistill.deploy.export import save_inference_model
from detdistill.deploy.layers import deploy_layer

D = '/tmp/pp_versions/demo_voc'
out_root = sys.argv[1]
opts = {'TrainDataset.dataset_dir': D, 'EvalDataset.dataset_dir': D,
        'TestDataset.anno_path': D + '/label_list.txt'}
paddle.seed(0)
cfg = load_config('configs/demo/yolov3_mobilenet_v1_demo.yml', ['%s=%s' % kv for kv in opts.items()])
model = build_model(cfg)
if len(sys.argv) > 2:
    model.set_state_dict(paddle.load(sys.argv[2]))
model.eval()
img = os.path.join(D, open(D + '/test.txt').readline().split()[0])
for with_nms in (False, True):
    od = os.path.join(out_root, 'nms' if with_nms else 'nonms')
    os.makedirs(od, exist_ok=True)
    save_inference_model(model, cfg, od, with_nms=with_nms)
    if not with_nms:
        # preprocess only (builds a disable_mkldnn predictor as a side effect)
        from detdistill.deploy.predictor import ExportedDetector
        feed = ExportedDetector(od, 'paddle').preprocess([img])
    t = {k: paddle.to_tensor(v) for k, v in feed.items()}
    with paddle.no_grad():
        if with_nms:
            o = model(t); ref = [o['bbox'].numpy(), o['bbox_num'].numpy()]
        else:
            layer = deploy_layer(model, False)
            ref = [x.numpy() for x in layer(*[t[n] for n in layer.inputs])]
    np.savez(os.path.join(od, 'feed.npz'), **feed)
    np.savez(os.path.join(od, 'ref.npz'), *ref)
    print('exported', od, [r.shape for r in ref], {k: v.shape for k, v in feed.items()})
print('paddle', paddle.__version__)
