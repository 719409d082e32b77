"""Training of the shipped X-ray model (dev only: needs the ``train`` extra, torch).

Nothing in the controller imports this package; the model it produces is the ONNX file in
``models/``, which runs on onnxruntime alone.
"""
