"""From text to a data directory: reading and downloading inputs, encoding and splitting them.

What it writes is the format ``data.load_corpus`` reads. May import the core and ``store``.
"""
