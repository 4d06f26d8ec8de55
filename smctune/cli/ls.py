"""``smctune ls``: what exists (tasks, methods, their tunables, presets), read from the catalog."""
from __future__ import annotations

from smctune.cli.arguments import add_command
from smctune.units import shown


def add_parser(commands) -> None:
    cmd = add_command(commands, "ls", "list tasks, methods, their tunables, or presets",
                      "smctune ls tasks", "smctune ls methods", "smctune ls tunables", "smctune ls presets")
    cmd.add_argument("what", choices=tuple(TABLES))
    cmd.set_defaults(handler=run)


def run(args) -> int:
    TABLES[args.what]()
    return 0


def _tasks() -> None:
    from smctune.catalog import registry

    rows = [(e.name, e.family, shown(e.metric, e.chance, digits=0), e.paper_model, e.description)
            for e in registry.TASKS.values()]
    _print_rows(("task", "family", "chance", "paper model", "description"), rows)


def _methods() -> None:
    from smctune.catalog import registry

    rows = [(m.name, "paper" if m.paper else "beyond", m.timing, m.criterion or "-",
             m.scope if m.criterion else "-", m.schedule, m.description)
            for m in registry.METHODS.values()]
    _print_rows(("method", "set", "timing", "criterion", "scope", "schedule", "description"), rows)
    print(f"\n--methods all = dense + the paper's {len(registry.PAPER_METHODS)}; "
          f"--methods paper+beyond adds {', '.join(registry.BEYOND_METHODS)}")
    print("tunables: `smctune ls tunables`")


def _tunables() -> None:
    from smctune.catalog import registry

    rows = [(m.name, key, _show(t.default), _show(t.smcbench) if t.departs else "", t.valid_text(),
             t.help) for m in registry.METHODS.values() for key, t in m.tunables.items()]
    _print_rows(("method", "tunable", "default", "smcbench", "valid", "what"), rows)


def _presets() -> None:
    from smctune.catalog import registry

    _print_rows(("preset", "description"), [(p.name, p.description) for p in registry.PRESETS.values()])


TABLES = {"tasks": _tasks, "methods": _methods, "tunables": _tunables, "presets": _presets}


def _show(value) -> str:
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _print_rows(header, rows) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths)] + [str(row[-1])]
        print("  ".join(cells).rstrip())
