"""Deployment: export a trained detector (Paddle Inference, ONNX), check the
export against the dygraph model, run exported models (their speed is
measured by bench/deploy_speed.py).

- ``export``: the deployed network, ``infer_cfg.yml``, the export itself;
- ``onnx_convert``: Paddle 3 PIR model -> ONNX with paddle2onnx, safely;
- ``predictor``: Paddle Inference and ONNX Runtime runners, preprocessing
  from ``infer_cfg.yml``;
- ``verify``: exported vs dygraph outputs, with stated tolerances.
"""
