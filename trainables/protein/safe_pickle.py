"""Read a split file pickle without letting it run code.

HotProtein and SMC-Bench describe their train/test splits as a pickled dict of name and label lists.
Unpickling calls whatever global the file names (``os.system``, ``builtins.eval``, a numpy
constructor), so a split file from the internet is a program, and the driver would run it before any
trial starts. ``load_plain`` admits only the plain container and scalar types a split needs and refuses
everything else, and persistent ids, with a one-line ``UserError`` naming the file and the global.
(Protocols 0-2 write ``bytes`` as a call to ``_codecs.encode``, so those are refused too; names and
labels never need bytes.)
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Union

from smctune.errors import UserError

# (module, name) pairs a split file may name. Python 2 pickles say ``__builtin__``.
_PLAIN = ("list", "dict", "tuple", "set", "frozenset", "str", "int", "float", "bool", "bytes", "complex")
ALLOWED = {(module, name) for module in ("builtins", "__builtin__") for name in _PLAIN}
ALLOWED.add(("collections", "OrderedDict"))
HINT = ("split files must hold only lists, dicts, strings and numbers; convert arrays with .tolist()")


class _PlainUnpickler(pickle.Unpickler):
    def __init__(self, stream, name: str):
        super().__init__(stream)
        self._name = name

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED:
            raise UserError(f"{self._name}: refused to load global {module}.{name:.80} ({HINT})")
        return super().find_class(module, name)

    def persistent_load(self, pid):
        raise UserError(f"{self._name}: refused a persistent id ({HINT})")


def load_plain(path: Union[str, Path]) -> object:
    """The object pickled in ``path``, if it is built only from plain containers and scalars."""
    try:
        stream = Path(path).open("rb")
    except OSError as err:
        raise UserError(f"cannot read split file {path}: {err.strerror}") from None
    with stream:
        try:
            return _PlainUnpickler(stream, str(path)).load()
        except UserError:
            raise
        except Exception as err:  # a truncated or foreign file fails in many ways; all are one line
            reason = " ".join(str(err).split()) or type(err).__name__
            raise UserError(f"{path}: not a readable pickle file ({type(err).__name__}: "
                            f"{reason:.120})") from None
