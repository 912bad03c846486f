"""Deployment: ONNX export (fp32, or int8 with the student's own GS scales) and the runtimes that run it."""
