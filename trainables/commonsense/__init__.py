"""Commonsense-reasoning task family (SMC-Bench's CSQA setting).

Only torch-free modules are imported eagerly here: the CLI driver imports task classes to validate
data and plan sweeps, and must not pay for torch or transformers. The model side (``backbone``,
``modeling``, ``features``, ``runtime``) is imported inside ``build``.
"""
