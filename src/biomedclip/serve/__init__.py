"""Serving BiomedCLIP: a FAISS figure index over corpus shards, an HTTP API and a web page.

Modules: ``shards`` (read figures and their byte offsets from WebDataset tars), ``index`` (the FAISS index, its
records and filters), ``build`` (embed shards into an index), ``app`` (the FastAPI service and web page),
``limits`` (request bounds and the streaming body limit), ``gate`` (fair, budgeted turns at the model),
``server`` (uvicorn with connection limits), ``cli``.
"""
