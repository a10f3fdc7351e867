"""Serving BiomedCLIP: a FAISS figure index over corpus shards, an HTTP API and a web page.

Modules: ``shards`` (read figures and their byte offsets from WebDataset tars), ``index`` (the FAISS index and
its records), ``build`` (embed shards into an index), ``app`` (the FastAPI service and web page), ``cli``.
"""
