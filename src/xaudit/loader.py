"""``load_model(source, **overrides)``: detect the format and call its adapter.

(Filled in by the foundation work: torch / onnx / tf_frozen / custom_vision.)
"""
