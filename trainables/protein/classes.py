"""The class schemes of the protein tasks: class names, the labels files may use, and how to read them.

Thermostability data sets label the same idea several ways: HotProtein's split files hold integer
labels (0..4 for its five classes, and SMC-Bench reuses 2..4 for Meltome's three with a label offset),
class-per-file layouts name the class in the file name, and Tm tables hold a temperature. One
``ClassScheme`` per task turns all of these into a class index, so every loader in ``data`` shares one
set of rules and one wording for its errors:

- an ``int`` in range (or a float with an integral value: SMC-Bench casts labels float -> long);
- a class name, case-insensitive, or one of the scheme's aliases (e.g. HotProtein's five class names
  for the hot/cold task);
- on a temperature column only, a number of °C binned at ``temperature_edges`` (refused where the
  scheme has none: a growth-temperature class cannot be read off a protein's own Tm).

Torch-free: the CLI driver validates data with it before any trial starts.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

from smctune.errors import UserError, choices

FIVE = ("cryophilic", "psychrophilic", "mesophilic", "thermophilic", "hyperthermophilic")
THERMOPROT = ("psychrophilic", "mesophilic", "thermophilic", "hyperthermophilic")
HOT_COLD = ("cold", "hot")


@dataclass(frozen=True)
class ClassScheme:
    """How one task names its classes and which labels its files may carry."""

    task: str
    label: str                                  # human name for messages, e.g. "HotProtein HP-S"
    classes: tuple[str, ...]
    aliases: Mapping[str, int] = field(default_factory=dict)  # other names (lower case) -> index
    temperature_edges: Optional[tuple[float, ...]] = None     # a temperature column is binned here
    label_offsets: tuple[int, ...] = (0,)                     # integer numberings (meltome: 0 and 2)

    # ------------------------------------------------------------------ names
    def names(self) -> dict[str, int]:
        """Every accepted class name (lower case) -> index: the classes and the aliases."""
        mapping = {name: index for index, name in enumerate(self.classes)}
        mapping.update(self.aliases)
        return mapping

    def name_index(self, name: str) -> Optional[int]:
        """The index of a class name or alias (case-insensitive), None when it is neither."""
        return self.names().get(name.strip().lower())

    def valid_labels(self) -> str:
        return f"0..{len(self.classes) - 1} or {choices(self.names())}"

    # ------------------------------------------------------------------ labels
    def index_of(self, value: Any, where: str, offset: int = 0) -> int:
        """A label (int, integral float, class name, or a string holding a number) -> class index.

        ``offset`` is subtracted from integer labels (``detect_offset`` decides it for a whole data
        set); ``where`` names file, record and field for the error."""
        if isinstance(value, str):
            index = self.name_index(value)
            if index is not None:
                return index
            number = parse_number(value)
            if number is None:
                raise UserError(f"{where}: {value.strip()!r:.60} is not a {self.label} class "
                                f"(valid: {self.valid_labels()})")
            value = number
        integer = integral(value)
        if integer is None:
            kind = "a fractional number" if isinstance(value, float) else type(value).__name__
            raise UserError(f"{where}: label {value!r:.60} is {kind}, not a class index or name "
                            f"(valid: {self.valid_labels()})")
        index = integer - offset
        if not 0 <= index < len(self.classes):
            low, high = offset, offset + len(self.classes) - 1
            raise UserError(f"{where}: label {integer} is out of range {low}..{high} for "
                            f"{self.label} ({', '.join(self.classes)})")
        return index

    def detect_offset(self, values: Iterable[Any]) -> int:
        """The integer numbering a whole data set uses: an offset other than 0 applies only when every
        label is an integer, all lie in ``offset..offset+n-1``, none is below ``offset`` and some lie
        beyond ``n-1`` (so plain 0-based labels are never shifted)."""
        numbers = []
        for value in values:
            if isinstance(value, str):
                if self.name_index(value) is not None:
                    return 0
                value = parse_number(value)
            integer = integral(value)
            if integer is None:
                return 0
            numbers.append(integer)
        if not numbers:
            return 0
        low, high, count = min(numbers), max(numbers), len(self.classes)
        for offset in self.label_offsets:
            if offset and low >= offset and high <= offset + count - 1 and high >= count:
                return offset
        return 0

    def bin_temperature(self, value: Any, where: str) -> int:
        """A temperature in °C -> class index, binned at ``temperature_edges`` (an edge goes up)."""
        if self.temperature_edges is None:
            raise UserError(f"{where}: {self.label} classes cannot be read from a temperature; give "
                            f"class labels instead (a 'label' column: {self.valid_labels()})")
        number = parse_number(value) if isinstance(value, str) else value
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise UserError(f"{where}: {value!r:.60} is not a temperature in °C")
        return bisect_right(self.temperature_edges, float(number))

    def binning(self) -> str:
        """The temperature rule in words, for the data notes."""
        edges = self.temperature_edges or ()
        bounds = [None, *edges, None]
        parts = []
        for index, name in enumerate(self.classes):
            low, high = bounds[index], bounds[index + 1]
            if low is None:
                parts.append(f"below {high:g} °C {name}")
            elif high is None:
                parts.append(f"{low:g} °C and above {name}")
            else:
                parts.append(f"{low:g} to below {high:g} °C {name}")
        return ", ".join(parts)


def parse_number(text: str) -> Optional[float | int]:
    """``"3"`` -> 3, ``"3.0"`` / ``"61.5"`` -> float, anything else None (CSV cells are strings)."""
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def integral(value: Any) -> Optional[int]:
    """An int, or a finite float with an integral value, as int; None otherwise (bool is not a label)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _to(classes: tuple[str, ...], groups: dict[str, tuple[str, ...]]) -> dict[str, int]:
    """Aliases: each member name of a group -> the index of the group's class."""
    return {member: classes.index(group) for group, members in groups.items() for member in members}


SCHEMES: dict[str, ClassScheme] = {
    "hp-s": ClassScheme("hp-s", "HotProtein HP-S", FIVE),
    "hp-s2c5": ClassScheme("hp-s2c5", "HotProtein HP-S²C5", FIVE),
    "hp-s2c2": ClassScheme(
        "hp-s2c2", "HotProtein HP-S²C2", HOT_COLD,
        aliases=_to(HOT_COLD, {"cold": FIVE[:3], "hot": FIVE[3:]}),
        temperature_edges=(45.0,)),
    "meltome": ClassScheme(
        "meltome", "Meltome", FIVE[2:], temperature_edges=(55.0, 70.0), label_offsets=(0, 2)),
    "thermo": ClassScheme("thermo", "ThermoProt (4 classes)", THERMOPROT),
    "thermo-hotcold": ClassScheme(
        "thermo-hotcold", "ThermoProt hot/cold", HOT_COLD,
        aliases=_to(HOT_COLD, {"cold": THERMOPROT[:2], "hot": THERMOPROT[2:]})),
}


def scheme(task: str) -> ClassScheme:
    if task not in SCHEMES:
        raise UserError(f"unknown protein task '{task}': choose one of {choices(SCHEMES)}")
    return SCHEMES[task]
