"""Protein thermostability task family (SMC-Bench's HotProtein and Meltome Atlas with ESM-1b and TAPE,
plus the bundled ThermoProt sample).

A protein sequence goes through a transformer (ESM-1b through fair-esm, or TAPE's BERT through
transformers), its final-layer states are mean-pooled over the residues, and SMC-Bench's head
(Linear -> LayerNorm -> ReLU -> Linear) predicts a thermostability class; the metric is accuracy.

- ``classes``      each task's classes, the names and numbers files may use for them (torch-free)
- ``fasta``        FASTA reading and residue checks with one-line errors (torch-free)
- ``safe_pickle``  reads HotProtein split files without executing anything they hold (torch-free)
- ``data``         the four layouts a ``--data-dir`` may have and the bundled sample (torch-free)
- ``sample``       the deterministic stratified split the bundled sample is cut with (torch-free)
- ``family``       the ``Task`` classes ``hp-s``, ``hp-s2c5``, ``hp-s2c2``, ``meltome``, ``thermo``,
  ``thermo-hotcold``
- model side (torch, imported inside ``build``): ``backbones``, ``modeling``, ``runtime``
"""
