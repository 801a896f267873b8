"""Everything a run keeps on disk, and how it is kept safe.

Run directories (``runs``: creating, finding, ``latest``, run.json, metrics.jsonl), the
checkpoint format (``manifest``: a checkpoint directory complete once its manifest is written;
``tensorfile``: self-describing safetensors files checked before they are trusted), crash-safe
writes (``atomic``), one trainer per run (``runlock``) and past runs as data (``history``).
May import the core (``errors``, ``config``, ``data``, ``model``) and nothing else of ours.
"""
