"""The front end: any model reference to one normalized ONNX graph.

load (example / factory / .onnx) -> export (dynamo or TorchScript) -> simplify (onnxsim, or
onnxscript's optimizer) -> named rewrite passes -> checker + shape inference -> parity check.
"""
