"""On-site X-ray inference: the model contract, numpy preprocessing, the onnxruntime service.

Import :mod:`controller.inference.settings` for the settings model and its factory; the
service module loads onnxruntime.
"""
