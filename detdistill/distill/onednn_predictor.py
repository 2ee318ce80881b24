"""A Paddle Inference predictor with oneDNN on CPU, for a program saved by
`paddle.jit.save`. Needs only paddle and numpy: the compiled teacher runs
this file as a script in a child process (`python onednn_predictor.py PREFIX
N,C,H,W THREADS [bfloat16]`), to see building and running it survive before
the training process does it.
"""
import sys

import numpy as np

# Paddle 3.3.1: this pass segfaults on leaky_relu's float64 negative_slope
# (it reads it as a float attribute while building its fused convolution).
BROKEN_PASSES = ['conv_activation_onednn_fuse_pass']


def build(prefix, threads, bfloat16=False):
    from paddle import inference
    cfg = inference.Config(prefix + '.json', prefix + '.pdiparams')
    cfg.disable_gpu()
    cfg.enable_onednn()
    if bfloat16:  # teacher_precision=bfloat16 on a CPU that has it
        cfg.enable_onednn_bfloat16()
    for name in BROKEN_PASSES:
        cfg.delete_pass(name)
    cfg.set_cpu_math_library_num_threads(int(threads))
    cfg.disable_glog_info()
    return inference.create_predictor(cfg)


def run(predictor, image):
    """The program's outputs, in its return order, for the float32 numpy
    batch `image`."""
    predictor.get_input_handle(predictor.get_input_names()[0]) \
        .copy_from_cpu(image)
    predictor.run()
    return [predictor.get_output_handle(n).copy_to_cpu()
            for n in predictor.get_output_names()]


if __name__ == '__main__':
    prefix, shape, threads = sys.argv[1:4]
    run(build(prefix, threads, sys.argv[4:5] == ['bfloat16']),
        np.zeros([int(s) for s in shape.split(',')], 'float32'))
