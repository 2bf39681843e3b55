"""Ascend 310 / 310P targets: ONNX -> ATC -> .om, run and timed with ais_bench.

No real Ascend toolkit or device has run any of this: see README.md in this folder.
"""
