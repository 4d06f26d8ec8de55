"""The ``smctune`` command: one thin module per subcommand that turns arguments into calls of the
sweep and report packages.
"""
