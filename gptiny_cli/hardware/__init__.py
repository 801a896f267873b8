"""Where code runs and how fast it can: device choice, number formats and what ``auto`` picks
(``device``), the one device set-up that train, eval and sample share (``setup``), peak FLOP/s
for MFU (``peaks``) and what ``gptiny doctor`` reports (``doctor``).

May import ``errors`` and ``config`` only: training, generation and the reports all ask it.
"""
