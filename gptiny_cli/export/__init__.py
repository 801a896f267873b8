"""A trained run in the formats other libraries load: Hugging Face transformers (``hf``) and ONNX (``onnx``).

``target`` writes an export directory safely (staged beside it, renamed into place) and names the
optional extra a format needs; ``hf`` and ``onnx`` convert the weights, each checked by the
consuming library before the files are kept. May import the core, ``store``, ``hardware`` and
``generation``; the optional packages (transformers, tokenizers, onnx, onnxruntime) are imported
only while exporting.
"""
