"""A figure helper process (figure_batch.py): import matplotlib, then draw the pickled jobs read
from stdin and write one outcome per job to stdout: ``None`` when drawn, ``("user", message)`` for
an error the user must fix, ``("error", text)`` for anything else (the parent draws that one itself).
"""
from __future__ import annotations

import os
import pickle
import sys


def main() -> None:
    results = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())   # stray prints must not corrupt the outcomes
    import importlib

    import matplotlib

    matplotlib.use("Agg")
    for module in ("matplotlib.pyplot", "smctune.figures", "smctune.report"):
        importlib.import_module(module)   # paid before the jobs arrive, while the parent works
    from smctune.errors import UserError

    jobs = pickle.load(sys.stdin.buffer)
    outcomes = []
    for job in jobs:
        try:
            job.run()
            outcomes.append(None)
        except UserError as err:
            outcomes.append(("user", str(err)))
        except Exception as err:  # noqa: BLE001 - reported; the parent redraws it
            outcomes.append(("error", f"{type(err).__name__}: {err}"))
    results.write(pickle.dumps(outcomes))
    results.close()


if __name__ == "__main__":
    main()
