"""Commonsense-reasoning task family (SMC-Bench's CSQA, WinoGrande and RACE settings).

All four tasks (``csqa``, ``winogrande``, ``race-m``, ``race-h``) are multiple choice with one score per
candidate and share one model, runtime and training path (``family.MultipleChoiceTask``); a task module
holds only its data layouts, hub name and input construction:

- ``data``       shared torch-free loading pieces (``Question``, jsonl reading, one-line errors)
- ``family``     ``MultipleChoiceTask``: validate_data / build for every task of the family
- ``csqa``, ``winogrande``, ``race``   one module per dataset
- ``features``   text pairs -> token tensors (with RACE's article-only truncation)
- ``modeling``, ``runtime``   the choice-scoring model and the trial runtime (the encoder comes from
  ``smctune.trainables.backbone``, shared by every family)

Only torch-free modules are imported eagerly: the CLI driver imports task classes to validate data and
plan sweeps, and must not pay for torch or transformers. The model side is imported inside ``build``.
"""
