"""``torch.load`` for checkpoints found on shared storage, never running code from the file.

Pretrained checkpoints (fair-esm, TAPE, fairseq) are pickles; ``weights_only=True`` admits only
tensors and plain containers, plus the few classes a family names (``argparse.Namespace`` for
fair-esm and fairseq). A refused class or an unreadable file is one line naming the file and what was
refused, so the protein and translation families report them the same way.
"""
from __future__ import annotations

import re
import warnings
from typing import Any, Sequence

from smctune.errors import UserError


def safe_torch_load(path: Any, admitted: Sequence, admitted_text: str) -> Any:
    """The file's contents on the CPU; ``admitted`` goes to ``torch.serialization.safe_globals``
    and ``admitted_text`` names it in the refusal message."""
    import torch

    try:
        with torch.serialization.safe_globals(list(admitted)), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*pickle protocol")
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch reports a bad file as any of half a dozen types
        refused = re.search(r"GLOBAL ([\w.]+)", str(err))
        if refused:
            raise UserError(f"{path}: refused to load: it needs the Python object '{refused.group(1)}', "
                            f"and unpickling arbitrary objects can run code (admitted: {admitted_text})") from None
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({reason})") from None
