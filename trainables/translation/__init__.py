"""Multilingual translation task family (SMC-Bench's mBART tasks ``mt-2to2``, ``mt-5to5``, ``mt-10to10``).

Each task fine-tunes a multilingual sequence-to-sequence model on every direction between its language
sub-group and English (English-centric pairs plus non-English pairs through the English pivot) and is
scored by BLEU on the same 20 directions, each of the ten languages to and from English, so the three
tasks' failing sparsities can be compared. The bundled sample is real FLORES-200 text.

- ``languages``     the language table, the sub-groups and each task's directions (torch-free)
- ``data``          the FLORES and parallel-file layouts, pivot pairs and the bundled sample (torch-free)
- ``metrics``       sacrebleu BLEU and chrF per direction with each target's tokenizer, and their means
- ``tokenizer``     the offline presets' SentencePiece model, trained on the training text and cached
- ``vocabularies``  the hub's and a fairseq dictionary's vocabularies, and the sentence framing all share
- ``checkpoints``   a fairseq mBART checkpoint directory read safely and mapped onto transformers' mBART
- ``models``        where the model and vocabulary come from (``model.source``), decoding settings
- ``runtime``       the per-trial ``TaskRuntime``: batches, loss, beam-search evaluation
- ``family``        the ``Task`` classes the registry names
"""
