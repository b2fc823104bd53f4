"""The fused cross-attention CUDA kernel: sources, build, numpy reference, launcher, TensorRT plugin."""
