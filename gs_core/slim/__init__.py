"""The GS method: gates (gamma), fake quantization, the pruning plan, the training loop and extraction."""
