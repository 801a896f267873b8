"""Where code runs and how fast it can: device choice, number formats and what ``auto`` picks
(``device``), the one device set-up that train, eval and sample share (``setup``), the faster CPU
kernels it swaps into a model (``kernels``), peak FLOP/s for MFU (``peaks``) and what
``gptiny doctor`` reports (``doctor``).

May import ``errors``, ``config`` and ``model`` only (``kernels`` knows the model's attention
layer): training, generation and the reports all ask it.
"""
