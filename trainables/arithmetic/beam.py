"""Beam search over prefix expressions for one problem (GTS's ``evaluate_tree``, beam 5 in SMC-Bench),
constrained so that every result is a complete, well-formed prefix tree.

As in GTS, a beam's score is the sum of its tokens' log-probabilities, finished beams stay in the pool
and compete with the extensions of unfinished ones, and the search stops when the best ``beam_size``
are all finished. Differences, all so the output is always a valid tree of at most ``max_length``
tokens (GTS could return a truncated expression when it ran out of steps):

- a state with ``open`` pending goals after ``length`` tokens may choose an operator only if the tree
  can still be closed: ``open + 1 <= max_length - length - 1`` (every pending goal needs one more leaf);
- leaves are limited to the constants and the problem's own numbers;
- log-probabilities are normalised over the allowed outputs only.

A prefix expression that starts with a leaf is that leaf alone (the root goal is closed by it), so no
separate rule is needed for that. The search runs all live beams of a step as one batch.
"""
from __future__ import annotations

import torch

from .tree_decoder import Memory, TreeDecoder, TreeState


def beam_search(decoder: TreeDecoder, memory: Memory, beam_size: int, max_length: int) -> list[int]:
    """Output indices of the best expression for the single problem in ``memory`` (batch of 1);
    ``[]`` only when the problem offers no leaf at all (no constants and no numbers)."""
    if memory.problem.size(0) != 1:
        raise ValueError("beam_search decodes one problem at a time")
    if max_length < 1:
        raise ValueError(f"max_length must be at least 1, got {max_length}")
    ops = decoder.num_operators
    leaves = decoder.predict.leaves(memory)
    blocked = decoder.leaf_blocked(memory)
    if bool(blocked.all()):
        return []
    beams: list[TreeState] = decoder.initial_states(memory)
    for _ in range(max_length):
        live = [state for state in beams if not state.done]
        if not live:
            break
        rows = torch.zeros(len(live), dtype=torch.long, device=leaves.device)
        scores, q, context = decoder.scores(live, memory.select(rows), leaves[rows], blocked[rows])
        allowed = torch.cat((torch.ones(len(live), ops, dtype=torch.bool, device=scores.device),
                             ~blocked[rows]), dim=1)
        for k, state in enumerate(live):
            if len(state.goals) + 2 > max_length - len(state.tokens):
                allowed[k, :ops] = False
        log_probs = torch.log_softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
        top_values, top_indices = log_probs.topk(min(beam_size, log_probs.size(1)), dim=-1)
        candidates = [(state.score, None, None, state) for state in beams if state.done]
        for k, state in enumerate(live):
            for value, index in zip(top_values[k].tolist(), top_indices[k].tolist()):
                if value != float("-inf"):
                    candidates.append((state.score + value, k, index, state))
        candidates.sort(key=lambda c: -c[0])
        kept = candidates[:beam_size]
        expand = [c for c in kept if c[1] is not None]
        grown = iter([])
        if expand:
            picks = torch.tensor([c[1] for c in expand], device=q.device)
            grown = iter(decoder.advance([c[3] for c in expand], [c[2] for c in expand], q[picks],
                                         context[picks], leaves[rows][picks], [c[0] for c in expand]))
        beams = [next(grown) if c[1] is not None else c[3] for c in kept]
    return list(beams[0].tokens)
