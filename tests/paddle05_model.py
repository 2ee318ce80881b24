"""A PaddleDetection 0.5 YOLOv3, built as a static graph with Paddle's own
static API and saved with Paddle's own per-variable save: the archives the
0.5 model zoo released, without downloading one.

Run as a script (Paddle's legacy static IR must be chosen before paddle is
imported, hence a process of its own); `+` separates several models:

    python tests/paddle05_model.py OUT --backbone resnet34 [--width 0.25]
        [--neck 128] [--classes 6] [--size 64] [--train] [--norm bn]
        [+ OUT2 --backbone mobilenet ...]

The network and its variable names are transcribed from PaddleDetection
release/0.5 (ppdet/modeling/backbones/resnet.py with name_adapter.py,
mobilenet.py, ppdet/modeling/anchor_heads/yolo_head.py): the same layers,
ParamAttr names, strides, paddings and activations, built with
paddle.static.nn (fluid.layers' successors) and, for 0.5's resize_nearest,
the legacy `nearest_interp` op with align_corners=True as fluid 1.8 appended
it. Two knobs that 0.5 did not have scale the widths down for tests:
`width` multiplies ResNet's channels and `neck` replaces the head's 512
base channels; at width 1 and neck 512 the code is 0.5's.

Writes to OUT: `names.json` ([name, shape] of every persistable variable);
unless --no-run, also `vars/` (one file per variable, by
paddle.static.io.save_vars), `values.npz` (each variable as Paddle holds it
after the random initialisation) and, with --size, `input.npy` and
`outputs.npz` (the three yolo_output maps of the test program).
"""
import argparse
import json
import os
import sys

os.environ['FLAGS_enable_pir_api'] = '0'  # before paddle is imported

import numpy as np  # noqa: E402
import paddle  # noqa: E402
from paddle import ParamAttr  # noqa: E402
from paddle.base.layer_helper import LayerHelper  # noqa: E402
from paddle.static import nn  # noqa: E402


class Net:
    def __init__(self, norm='bn'):
        self.norm = norm

    def norm_layer(self, x, bn_name, sep, var, act):
        """batch_norm as 0.5 called it, or its affine_channel norm."""
        if self.norm == 'affine_channel':
            c = x.shape[1]
            scale = paddle.static.create_parameter(
                [c], 'float32', name=bn_name + sep + 'scale',
                default_initializer=paddle.nn.initializer.Constant(1.))
            bias = paddle.static.create_parameter(
                [c], 'float32', name=bn_name + sep + 'offset',
                default_initializer=paddle.nn.initializer.Constant(0.))
            out = x * scale.reshape([1, c, 1, 1]) + bias.reshape([1, c, 1, 1])
            return paddle.nn.functional.relu(out) if act == 'relu' else out
        return nn.batch_norm(
            x, act=act, param_attr=ParamAttr(name=bn_name + sep + 'scale'),
            bias_attr=ParamAttr(name=bn_name + sep + 'offset'),
            moving_mean_name=bn_name + sep + 'mean',
            moving_variance_name=bn_name + sep + var)


class ResNet(Net):
    """resnet.py ResNet(depth=34, variant='b', norm_type='bn'),
    feature_maps [3, 4, 5] as in configs/yolov3_r34_voc.yml."""
    depth_cfg = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}

    def __init__(self, depth=34, width=1.0, norm='bn'):
        super().__init__(norm)
        self.depth = depth
        self.stage_filters = [int(c * width) for c in (64, 128, 256, 512)]
        self.c1_out = int(64 * width)

    def conv_norm(self, x, num_filters, filter_size, stride=1, act=None,
                  name=None):
        conv = nn.conv2d(x, num_filters, filter_size, stride=stride,
                         padding=(filter_size - 1) // 2, act=None,
                         param_attr=ParamAttr(name=name + '_weights'),
                         bias_attr=False)
        # NameAdapter.fix_conv_norm_name
        bn_name = 'bn_' + name if name == 'conv1' else 'bn' + name[3:]
        return self.norm_layer(conv, bn_name, '_', 'variance', act)

    def shortcut(self, x, ch_out, stride, is_first, name):
        if x.shape[1] != ch_out or stride != 1 or (self.depth < 50
                                                   and is_first):
            return self.conv_norm(x, ch_out, 1, stride, name=name)
        return x

    def basicblock(self, x, num_filters, stride, is_first, name):
        conv0 = self.conv_norm(x, num_filters, 3, stride, act='relu',
                               name=name + '_branch2a')
        conv1 = self.conv_norm(conv0, num_filters, 3, act=None,
                               name=name + '_branch2b')
        short = self.shortcut(x, num_filters, stride, is_first,
                              name=name + '_branch1')
        return paddle.nn.functional.relu(short + conv1)

    def layer_warp(self, x, stage_num):
        count = self.depth_cfg[self.depth][stage_num - 2]
        for i in range(count):
            name = 'res{}{}'.format(stage_num, chr(ord('a') + i))
            is_first = i == 0 and stage_num == 2
            x = self.basicblock(x, self.stage_filters[stage_num - 2],
                                2 if i == 0 and stage_num != 2 else 1,
                                is_first, name)
        return x

    def __call__(self, x):
        x = self.conv_norm(x, self.c1_out, 7, 2, act='relu', name='conv1')
        x = paddle.nn.functional.max_pool2d(x, 3, 2, 1)
        outs = []
        for stage in (2, 3, 4, 5):
            x = self.layer_warp(x, stage)
            if stage in (3, 4, 5):
                outs.append(x)
        return outs


class MobileNet(Net):
    """mobilenet.py MobileNet(conv_group_scale=scale,
    with_extra_blocks=False)."""

    def __init__(self, scale=1.0, norm='bn'):
        super().__init__(norm)
        self.scale = scale

    def conv_norm(self, x, filter_size, num_filters, stride, padding,
                  num_groups=1, act='relu', name=None):
        conv = nn.conv2d(x, num_filters, filter_size, stride=stride,
                         padding=padding, groups=num_groups, act=None,
                         param_attr=ParamAttr(name=name + '_weights'),
                         bias_attr=False)
        return self.norm_layer(conv, name + '_bn', '_', 'variance', act)

    def depthwise_separable(self, x, nf1, nf2, groups, stride, name):
        s = self.scale
        x = self.conv_norm(x, 3, int(nf1 * s), stride, 1, int(groups * s),
                           name=name + '_dw')
        return self.conv_norm(x, 1, int(nf2 * s), 1, 0, name=name + '_sep')

    def __call__(self, x):
        s, ds = self.scale, self.depthwise_separable
        blocks = []
        out = self.conv_norm(x, 3, int(32 * s), 2, 1, name='conv1')
        out = ds(out, 32, 64, 32, 1, 'conv2_1')
        out = ds(out, 64, 128, 64, 2, 'conv2_2')
        out = ds(out, 128, 128, 128, 1, 'conv3_1')
        out = ds(out, 128, 256, 128, 2, 'conv3_2')
        blocks.append(out)
        out = ds(out, 256, 256, 256, 1, 'conv4_1')
        out = ds(out, 256, 512, 256, 2, 'conv4_2')
        blocks.append(out)
        for i in range(5):
            out = ds(out, 512, 512, 512, 1, 'conv5_' + str(i + 1))
        out = ds(out, 512, 1024, 512, 2, 'conv5_6')
        out = ds(out, 1024, 1024, 1024, 1, 'conv6')
        blocks.append(out)
        return blocks


class YOLOv3Head(Net):
    """yolo_head.py YOLOv3Head._get_outputs (conv_block_num 2, no
    drop_block / coord_conv / iou_aware / spp), 3 anchors per level."""

    def __init__(self, num_classes, channel=512):
        super().__init__('bn')
        self.num_classes, self.channel = num_classes, channel

    def conv_bn(self, x, ch_out, filter_size, stride, padding, act='leaky',
                name=None):
        conv = nn.conv2d(x, ch_out, filter_size, stride=stride,
                         padding=padding, act=None,
                         param_attr=ParamAttr(name=name + '.conv.weights'),
                         bias_attr=False)
        out = self.norm_layer(conv, name + '.bn', '.', 'var', None)
        if act == 'leaky':
            out = paddle.nn.functional.leaky_relu(out, 0.1)
        return out

    def detection_block(self, x, channel, name):
        for j in range(2):
            x = self.conv_bn(x, channel, 1, 1, 0,
                             name='{}.{}.0'.format(name, j))
            x = self.conv_bn(x, channel * 2, 3, 1, 1,
                             name='{}.{}.1'.format(name, j))
        route = self.conv_bn(x, channel, 1, 1, 0, name='{}.2'.format(name))
        tip = self.conv_bn(route, channel * 2, 3, 1, 1,
                           name='{}.tip'.format(name))
        return route, tip

    @staticmethod
    def resize_nearest(x, scale):
        """fluid 1.8 layers.resize_nearest(input, scale): the
        `nearest_interp` op with align_corners=True."""
        helper = LayerHelper('nearest_interp')
        out = helper.create_variable_for_type_inference(x.dtype)
        helper.append_op(type='nearest_interp', inputs={'X': x},
                         outputs={'Out': out},
                         attrs={'out_h': -1, 'out_w': -1, 'scale': scale,
                                'interp_method': 'nearest',
                                'align_corners': True, 'align_mode': 1,
                                'data_layout': 'NCHW'})
        return out

    def __call__(self, blocks):
        outputs, route = [], None
        for i, block in enumerate(blocks[::-1]):
            if i > 0:
                block = paddle.concat([route, block], axis=1)
            route, tip = self.detection_block(
                block, self.channel // (2 ** i), 'yolo_block.{}'.format(i))
            outputs.append(nn.conv2d(
                tip, 3 * (self.num_classes + 5), 1, stride=1, padding=0,
                act=None,
                param_attr=ParamAttr(name='yolo_output.{}.conv.weights'
                                     .format(i)),
                bias_attr=ParamAttr(name='yolo_output.{}.conv.bias'
                                    .format(i))))
            if i < 2:
                route = self.conv_bn(route, self.channel // 2 // (2 ** i), 1,
                                     1, 0, name='yolo_transition.{}'.format(i))
                route = self.resize_nearest(route, 2.)
        return outputs


def build(args):
    paddle.enable_static()
    paddle.seed(args.seed)
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        image = paddle.static.data('image', [1, 3, args.size, args.size],
                                   'float32')
        if args.backbone == 'resnet34':
            body = ResNet(34, args.width, args.norm)(image)
        else:
            body = MobileNet(args.width, args.norm)(image)
        outputs = YOLOv3Head(args.classes, args.neck)(body) \
            if args.classes else body
        test = main.clone(for_test=True)
        if args.train:  # what a 0.5 training checkpoint holds besides weights
            paddle.static.create_global_var([1], 0, 'int64', persistable=True,
                                            name='@LR_DECAY_COUNTER@')
            loss = sum(paddle.mean(o) for o in outputs)
            paddle.optimizer.Momentum(0.001, momentum=0.9).minimize(loss)
    return main, startup, test, outputs


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    while argv:
        job = argv[:argv.index('+')] if '+' in argv else argv
        argv = argv[len(job) + 1:]
        with paddle.static.scope_guard(paddle.static.Scope()):
            write(job)


def write(argv):
    p = argparse.ArgumentParser()
    p.add_argument('out')
    p.add_argument('--backbone', choices=['resnet34', 'mobilenet'],
                   required=True)
    p.add_argument('--width', type=float, default=1.0)
    p.add_argument('--neck', type=int, default=512)
    p.add_argument('--classes', type=int, default=20,
                   help='0: backbone only (an ImageNet-style archive)')
    p.add_argument('--size', type=int, default=64)
    p.add_argument('--norm', default='bn', choices=['bn', 'affine_channel'])
    p.add_argument('--train', action='store_true')
    p.add_argument('--no-run', action='store_true')
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args(argv)

    main_prog, startup, test, outputs = build(args)
    persistable = [v for v in main_prog.list_vars() if v.persistable
                   and v.name not in ('feed', 'fetch')]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, 'names.json'), 'w') as f:
        json.dump([[v.name, list(v.shape)] for v in persistable], f)
    if args.no_run:
        return None
    place = paddle.CPUPlace()
    exe = paddle.static.Executor(place)
    exe.run(startup)
    # random batch-norm parameters and statistics, so that a mix-up of
    # scale/offset/mean/variance changes the numbers
    rng = np.random.RandomState(args.seed)
    scope = paddle.static.global_scope()
    for v in persistable:
        if v.name.endswith(('scale', 'offset', 'mean', 'variance', 'var')):
            t = scope.find_var(v.name).get_tensor()
            shape = np.array(t).shape
            value = rng.uniform(0.5, 1.5, shape) if v.name.endswith(
                ('variance', 'var', 'scale')) else rng.normal(0, 0.1, shape)
            t.set(value.astype('float32'), place)
    paddle.static.io.save_vars(exe, os.path.join(args.out, 'vars'), main_prog,
                               vars=persistable)
    np.savez(os.path.join(args.out, 'values.npz'), **{
        v.name: np.array(scope.find_var(v.name).get_tensor())
        for v in persistable})
    if args.classes:
        x = rng.normal(0, 1, (1, 3, args.size, args.size)).astype('float32')
        np.save(os.path.join(args.out, 'input.npy'), x)
        got = exe.run(test, feed={'image': x},
                      fetch_list=[test.global_block().var(o.name)
                                  for o in outputs])
        np.savez(os.path.join(args.out, 'outputs.npz'),
                 *[np.asarray(g) for g in got])


if __name__ == '__main__':
    sys.exit(main())
