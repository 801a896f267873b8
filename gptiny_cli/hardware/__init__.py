"""Where code runs and how fast it can: device choice, number formats, peak FLOP/s.

May import ``errors`` and ``config`` only: training, generation and the reports all ask it.
"""
