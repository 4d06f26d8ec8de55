"""Multilingual translation task family (SMC-Bench's mBART tasks ``mt-2to2``, ``mt-5to5``, ``mt-10to10``).

Each task fine-tunes a multilingual sequence-to-sequence model on every direction between its language
sub-group and English (English-centric pairs plus non-English pairs through the English pivot) and is
scored by BLEU on the same 20 directions, each of the ten languages to and from English, so the three
tasks' failing sparsities can be compared. The bundled sample is real FLORES-200 text.

- ``languages``    the language table, the sub-groups and each task's directions (torch-free)
- ``data``         the FLORES and parallel-file layouts, pivot pairs and the bundled sample (torch-free)
- ``tokenizer``    text to token ids with the target language's token forced first
- ``metrics``      BLEU per direction with each target's sacrebleu tokenizer, and their mean
- ``checkpoints``  finds and loads the pretrained multilingual weights
- ``modeling``     the sequence-to-sequence model the pruning methods act on
- ``runtime``      the per-trial ``TaskRuntime``: batches per direction, loss, beam-search evaluation
- ``family``       the ``Task`` classes the registry names
"""
