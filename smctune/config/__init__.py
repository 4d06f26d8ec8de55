"""The configuration: search-space YAML and command-line values parsed once, strictly, into frozen
specs (``SweepSpec``, ``TrialSpec``). ``schema`` describes every key of a search-space file (pydantic,
imported only when a file is read), ``extends`` reads a file and the files it builds on, and
``search_space`` turns the validated file into the frozen ``SearchSpace``. The lowest layer: it
imports nothing of the rest of smctune but the catalog.
"""
