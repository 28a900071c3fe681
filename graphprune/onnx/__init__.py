"""ONNX: export with a flat signature, parity in ONNX Runtime, inputs for ONNX Runtime runs, latency benchmark."""
