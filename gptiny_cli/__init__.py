"""GPTiny: train a character-level GPT from scratch and sample from it."""

__version__ = "0.1.0"
