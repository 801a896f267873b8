"""Serving a run over HTTP: the generation worker that owns the model, the OpenAI-compatible API,
the explanation endpoint and the playground page (``static/``, shipped as package data).

FastAPI and uvicorn are the optional ``serve`` extra, imported only by ``app.py`` (and by the
command line inside ``gptiny serve``). May import everything below the command line: the core,
``store``, ``hardware``, ``prepare``, ``generation``, ``training`` and ``report``.
"""
