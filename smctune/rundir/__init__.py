"""Everything a run directory holds, and the only code that writes there: per-trial records, masks,
the dense-baseline cache and the environment. Shared storage, so nothing here unpickles.
"""
