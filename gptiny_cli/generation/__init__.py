"""Text from a trained model: the sampling maths, the decoding loops, the fast inference paths.

May import the core and ``hardware``; the model itself stays in ``model.py``.
"""
