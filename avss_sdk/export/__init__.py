"""Export a trained checkpoint to what the runtime reads: checked ONNX files per stage, the
tokenizer, ``manifest.json``, INT8 QDQ files calibrated on SynthAVS frames
(:mod:`avss_sdk.export.quantize_int8`), TensorRT engines where TensorRT and a GPU are present,
and a Triton model repository. Needs PyTorch and ONNX (``avss_sdk[train]``); the command is
``avss-build-engines`` (:mod:`avss_sdk.export.build_engines`)."""
