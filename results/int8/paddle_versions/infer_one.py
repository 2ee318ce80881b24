"""Usage: infer_one.py MODEL_DIR MODE OUT_NPZ [--time] [--delete PASS ...] [--ir-debug]
MODE: plain (disable_mkldnn) | mkldnn (enable_mkldnn) | mkldnn_int8 (enable_mkldnn + enable_mkldnn_int8)"""
import sys, time, os
import numpy as np
import paddle
from paddle import inference
md, mode, out = sys.argv[1:4]
rest = sys.argv[4:]
do_time = '--time' in rest
dele = rest[rest.index('--delete') + 1:] if '--delete' in rest else []
dele = [d for d in dele if not d.startswith('--')]
cfg = inference.Config(os.path.join(md, 'model.json'), os.path.join(md, 'model.pdiparams'))
if mode == 'plain':
    cfg.disable_mkldnn()
else:
    cfg.enable_mkldnn()
    if mode == 'mkldnn_int8':
        cfg.enable_mkldnn_int8()
for p in dele:
    cfg.delete_pass(p)
cfg.set_cpu_math_library_num_threads(1)
pred = inference.create_predictor(cfg)
feed = dict(np.load(os.path.join(md, 'feed.npz')))
def run():
    for n in pred.get_input_names():
        h = pred.get_input_handle(n); a = np.ascontiguousarray(feed[n], dtype='float32')
        h.reshape(a.shape); h.copy_from_cpu(a)
    pred.run()
    return [pred.get_output_handle(n).copy_to_cpu() for n in pred.get_output_names()]
outs = run()
np.savez(out, *outs)
print('RAN', mode, paddle.__version__, [o.shape for o in outs], flush=True)
if do_time:
    for _ in range(5): run()
    t = time.perf_counter()
    for _ in range(50): run()
    dt = time.perf_counter() - t
    print('TIME %s %.2f img/s (%.2f ms/img)' % (mode, 50 / dt, dt / 50 * 1000), flush=True)
