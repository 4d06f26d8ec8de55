"""``python -m smctune.cli``: the same as the ``smctune`` console script."""
from smctune.cli.main import entry

entry()
