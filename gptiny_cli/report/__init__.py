"""What training and trained models look like: the live display, curves, plots, TensorBoard,
parameter inspection and exact evaluation. Pure functions from data to tables and figures
wherever possible; printing is left to the command line.

May import everything below it: the core, ``store``, ``hardware``, ``prepare``, ``training``
and ``generation``.
"""
