"""What a model costs: parameters and multiply-accumulates, counted in PyTorch and in an ONNX graph."""
