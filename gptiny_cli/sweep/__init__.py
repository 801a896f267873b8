"""Sweeps: a study over config keys (``spec`` parses ``--param``), each trial a normal run under the sweep's
directory (``study`` drives them in this process through ``training``), and the results (``results``).

May import the core, ``store``, ``hardware``, ``training`` and ``report``; Optuna only inside functions, so
that the rest of gptiny works without the ``sweep`` extra.
"""
