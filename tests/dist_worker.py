"""Started by tests/test_distributed.py under `python -m paddle.distributed
.launch`: runs the real tools/train.py or slim/distillation/distill.py main,
then every rank saves its student weights so the test can compare ranks
(the CLI saves checkpoints from rank 0 only).

python -m paddle.distributed.launch --nproc_per_node 2 tests/dist_worker.py \
    train|distill OUT_DIR [tool arguments ...]
"""
import json
import os
import sys

import paddle

from conftest import script  # tests/ is this script's directory

if __name__ == '__main__':
    tool, out = sys.argv[1], sys.argv[2]
    path = {'train': 'tools/train.py',
            'distill': 'slim/distillation/distill.py'}[tool]
    trainer = script(path).main(sys.argv[3:])
    rank = paddle.distributed.get_rank()
    paddle.save(trainer.detector.state_dict(), os.path.join(
        out, 'rank{}.pdparams'.format(rank)))
    sampler = trainer.loader.batch_sampler
    if hasattr(sampler, 'unlabeled'):  # the unlabeled images of epoch 0
        sampler.start_epoch(0)
        with open(os.path.join(out, 'unlabeled{}.json'.format(rank)),
                  'w') as f:
            json.dump([[i - sampler.offset for i in b if i >= sampler.offset]
                       for b in sampler], f)
