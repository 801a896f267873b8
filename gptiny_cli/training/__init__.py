"""Training a model: which run to train, the session that holds it, the loop, and what guards it.

The road in: ``plan`` decides which run a process trains and settles its config, before
anything is built; ``launch.build_session`` builds that plan's session, a new one
(``session``) or one going on from its checkpoint (``resume``); ``launch`` also starts
several processes (``--nproc``). ``loop`` is the training loop, emitting step statistics as
events; ``losses`` measures the model (a batch, an estimate, a whole split); ``schedule``
and ``optim`` are the loop's maths, ``budget`` its clock and ``average`` the
weights' moving average; ``state`` saves and restores it exactly;
``faults`` and ``interrupt`` turn failures and Ctrl-C into a saved run; ``distributed`` is
data parallelism. May import the core, ``store`` and ``hardware``; never a report or the
command line.
"""
