"""From text to a data directory: ``corpus`` (the whole job), ``sources`` (files, folders, stdin),
``download`` (URLs), ``stream`` (chunked UTF-8 reading), ``encode`` (the two passes), ``splits``,
``vocabulary`` (``--vocab``, ``--extend``, ``--min-count``) and ``baselines``.

What it writes is the format ``data.load_corpus`` reads. May import the core and ``store``.
"""
