"""A trained run in the formats other libraries load: Hugging Face transformers (``hf``) and ONNX (``onnx``).

``exporting`` is the one call the command makes; ``target`` writes an export directory safely
(staged beside it, renamed into place) and names the optional extra a format needs; ``hf``
(tensors, config, the head-bias fold), ``hf_dir`` (the files, checked by transformers), ``card``
(the model card) and ``onnx`` (the graph, checked by onnxruntime) do the converting.

May import the core, ``store``, ``hardware`` and ``generation``; the optional packages
(transformers, tokenizers, onnx, onnxscript, onnxruntime) are imported only while exporting.
"""
