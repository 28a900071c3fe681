"""Files: loading models and example inputs, writing results atomically, torch.export programs."""
