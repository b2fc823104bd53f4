"""The fused cross-attention CUDA kernel's build, numpy reference and cuda-python launcher.

Its source, ``avss_sdk/runtime/cuda/fused_cross_attention.cu``, and its TensorRT plugin,
:mod:`avss_sdk.runtime.tensorrt_plugin`, live in the package, so that a pip-installed SDK can
build plugin engines on the device; this folder builds, benchmarks and tests that one copy.
"""
