"""Differentiable views of models (torch modules, ONNX graphs, TF frozen graphs).

Contract between adapters and gradient explainers (implemented by the gradient work):

* ``Differentiable`` -- ``.module`` (torch.nn.Module: native input tensor -> pre-softmax
  logits), ``.preprocessing`` (xaudit.model.Preprocessing, applied differentiably by
  ``.native(x)``), ``.logits(x_canonical)`` with x a torch tensor (N,H,W,3) RGB [0,1].
* ``for_torch_module(module, preprocessing) -> Differentiable``
* ``for_onnx(path_or_bytes, preprocessing, probe_fn) -> Differentiable`` (raises
  UnsupportedOperation with the reason when conversion or parity fails)
* ``for_tf_graph(graph_def_path, ...)`` likewise.
"""
