"""``Mask``: canonical parameter name -> bool tensor (True = kept), plus tied-weight aliases.

A small value type decoupled from any model: it can be compared, saved, loaded, reported on, and
applied to any model whose parameters carry the same names and shapes.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Iterator, Mapping, Optional, Sequence

import torch

from ..errors import UserError
from .select import PrunableParam

_FORMAT = "smctune.mask/1"


@dataclass(frozen=True)
class LayerStat:
    """Per-tensor sparsity report row."""

    name: str
    shape: tuple
    numel: int
    kept: int
    sparsity: float
    aliases: tuple = ()


class Mask:
    """Mapping canonical name -> bool tensor (True = kept) with ``aliases[name]`` = other names."""

    __slots__ = ("_masks", "aliases")

    def __init__(self, masks: Mapping[str, torch.Tensor],
                 aliases: Optional[Mapping[str, Sequence[str]]] = None):
        checked: dict[str, torch.Tensor] = {}
        for name, tensor in masks.items():
            if not isinstance(name, str):
                raise UserError(f"mask keys must be parameter names (str), got {name!r}")
            if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.bool:
                kind = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
                raise UserError(f"mask for {name!r} must be a bool tensor, got {kind}")
            checked[name] = tensor
        aliases = dict(aliases or {})
        unknown = sorted(set(aliases) - set(checked))
        if unknown:
            raise UserError(f"aliases given for names not in the mask: {', '.join(unknown)}")
        self._masks = checked
        self.aliases: dict[str, tuple[str, ...]] = {n: tuple(aliases.get(n, ())) for n in checked}

    # ---------------------------------------------------------------- construction
    @classmethod
    def ones(cls, params: Sequence[PrunableParam]) -> "Mask":
        """Dense mask (nothing pruned) for ``params``."""
        return cls({p.name: torch.ones(p.param.shape, dtype=torch.bool, device=p.param.device)
                    for p in params},
                   {p.name: p.aliases for p in params})

    # ---------------------------------------------------------------- mapping protocol
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._masks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    def __contains__(self, name: object) -> bool:
        return name in self._masks

    def keys(self):
        return self._masks.keys()

    def values(self):
        return self._masks.values()

    def items(self):
        return self._masks.items()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mask):
            return NotImplemented
        if list(self._masks) != list(other._masks) or self.aliases != other.aliases:
            return False
        return all(a.shape == b.shape and torch.equal(a, b.to(a.device))
                   for a, b in zip(self._masks.values(), other._masks.values()))

    __hash__ = None  # mutable tensors inside: not hashable

    def __repr__(self) -> str:
        pruned, total = self.counts()
        sp = pruned / total if total else 0.0
        return f"Mask({len(self)} tensors, {total} entries, sparsity={sp:.4f})"

    # ---------------------------------------------------------------- statistics
    def counts(self) -> tuple[int, int]:
        """``(pruned, total)`` entries over the masked tensors (a tied tensor counts once)."""
        total = sum(m.numel() for m in self._masks.values())
        kept = sum(int(m.sum()) for m in self._masks.values())
        return total - kept, total

    def sparsity(self) -> float:
        """Fraction of masked entries that are pruned (0.0 for an empty mask)."""
        pruned, total = self.counts()
        return pruned / total if total else 0.0

    def density(self) -> float:
        return 1.0 - self.sparsity()

    def layerwise(self) -> list[LayerStat]:
        stats = []
        for name, m in self._masks.items():
            numel = m.numel()
            kept = int(m.sum())
            stats.append(LayerStat(name, tuple(m.shape), numel, kept,
                                   (numel - kept) / numel if numel else 0.0, self.aliases[name]))
        return stats

    def layerwise_csv(self, stats: Optional[list] = None) -> str:
        """CSV report, header ``name,shape,numel,kept,sparsity,aliases``.

        ``shape`` is written as ``768x3072``; ``aliases`` are joined with ``;``.
        """
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["name", "shape", "numel", "kept", "sparsity", "aliases"])
        for s in self.layerwise() if stats is None else stats:
            writer.writerow([s.name, "x".join(str(d) for d in s.shape), s.numel, s.kept,
                             f"{s.sparsity:.6f}", ";".join(s.aliases)])
        return buf.getvalue()

    def sparsity_over(self, model: torch.nn.Module) -> float:
        """Pruned entries / all unique parameter entries of ``model`` (tied tensors counted once)."""
        self.resolve(model)
        total = sum(p.numel() for p in model.parameters())  # parameters() de-duplicates
        pruned, _ = self.counts()
        return pruned / total if total else 0.0

    # ---------------------------------------------------------------- model interaction
    def resolve(self, model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter, torch.Tensor]]:
        """``[(name, param, mask)]`` for ``model``; raises UserError on unknown names or bad shapes."""
        by_name = dict(model.named_parameters(remove_duplicate=False))
        out, missing = [], []
        for name, m in self._masks.items():
            param = by_name.get(name)
            if param is None:
                param = next((by_name[a] for a in self.aliases[name] if a in by_name), None)
            if param is None:
                missing.append(name)
                continue
            if tuple(param.shape) != tuple(m.shape):
                raise UserError(f"mask for {name!r} has shape {tuple(m.shape)} but the model's "
                                f"parameter has shape {tuple(param.shape)}")
            out.append((name, param, m))
        if missing:
            raise UserError(f"mask names not found in the model: {', '.join(missing[:5])}"
                            f"{' ...' if len(missing) > 5 else ''}")
        return out

    @torch.no_grad()
    def apply(self, model: torch.nn.Module) -> None:
        """Zero the pruned entries of ``model``'s parameters in place."""
        for _, param, m in self.resolve(model):
            param.masked_fill_(~m.to(param.device), 0)

    def to(self, device) -> "Mask":
        return Mask({n: m.to(device) for n, m in self._masks.items()}, self.aliases)

    # ---------------------------------------------------------------- persistence
    def state_dict(self) -> dict:
        return {"format": _FORMAT,
                "masks": {n: m.detach().cpu() for n, m in self._masks.items()},
                "aliases": {n: list(a) for n, a in self.aliases.items()}}

    @classmethod
    def from_state_dict(cls, state: dict) -> "Mask":
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise UserError(f"not a smctune mask (expected format {_FORMAT!r})")
        return cls(state["masks"], state.get("aliases", {}))

    def save(self, path) -> None:
        torch.save(self.state_dict(), path)

    @classmethod
    def load(cls, path, map_location="cpu") -> "Mask":
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except FileNotFoundError:
            raise UserError(f"mask file not found: {path}") from None
        except Exception as err:  # unpickling errors of all kinds: the file is not ours
            raise UserError(f"cannot read mask file {path}: {type(err).__name__}") from None
        return cls.from_state_dict(state)
