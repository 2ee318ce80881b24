"""INT8 students: post-training quantization (PTQ) and quantization-aware
training (QAT) with distillation, the converted INT8 network and its
checkpoints, and its ONNX QDQ export. docs/quantization.md has what works on
Paddle 3.3.1 and why this is built as it is."""
