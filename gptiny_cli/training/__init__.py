"""Training a model: which run to train, the session that holds it, the loop, and what guards it.

``launch`` decides which run a process trains and builds its ``session`` (``resume`` rebuilds
one from disk); ``loop`` is the training loop, emitting step statistics as events; ``schedule``
and ``optim`` are its maths; ``state`` saves and restores it exactly; ``faults`` and
``interrupt`` turn failures and Ctrl-C into a saved run; ``distributed`` is data parallelism.
May import the core, ``store`` and ``hardware``; never a report or the command line.
"""
