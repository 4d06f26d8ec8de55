"""What exists, as data: tasks, methods (criterion x scope x schedule), presets and tunables.

The core reaches a task family only through this catalog, by name, so adding a task or a method is
an entry here and never an ``if`` elsewhere.
"""
