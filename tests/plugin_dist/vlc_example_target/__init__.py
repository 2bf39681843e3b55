"""vlc-example-target: the `onnx-reference` target, loaded by vlc through the `vlc` entry-point group."""
