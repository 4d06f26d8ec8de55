"""Arithmetic-reasoning task family (SMC-Bench's MAWPS, ASDiv-A and SVAMP with GTS and Graph2Tree).

A pretrained encoder embeds the math word problem, a BiLSTM (plus, for Graph2Tree, a graph transformer
over quantity graphs) encodes it, and a goal-driven tree decoder emits a prefix expression over the
problem's numbers; the metric is value accuracy (the expression evaluates to the answer).

- ``problem``      the shared ``Problem`` record and operator set (torch-free)
- ``data``         loaders for the SVAMP repository's CSV layouts, folds, bundled sample (torch-free)
- ``expressions``  prefix-expression evaluation, value/equation accuracy, output vocabulary (torch-free)
- ``graphs``       Graph2Tree's quantity cell and quantity comparison graphs (torch-free)
- ``family``       the ``Task`` classes ``mawps``, ``asdiv-a``, ``svamp``
- model side (torch, imported inside ``build``): encoder, tree decoder, beam search, runtime
"""
