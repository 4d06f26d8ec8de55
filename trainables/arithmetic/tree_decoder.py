"""The goal-driven tree decoder of GTS (Xie & Sun, IJCAI 2019), shared by GTS and Graph2Tree.

Decoding is top-down and left-to-right in prefix order. A stack holds the goal vectors still to be
realised (the root goal is the problem vector). At each step the top goal, plus the embedding of its
completed left sibling when the goal is a right child, gives a node vector ``q``; attention over the
word encodings gives a context ``c``; ``[q; c]`` scores the operators (a linear layer) and the leaves
(the learned constant embeddings and the problem's number encodings, through a small MLP). An operator
spawns a left and a right child goal (GenerateNode); a leaf closes sub-trees bottom-up: while the
sub-tree stack has a finished left operand on top, Merge folds operator, left and right operand into
one sub-tree embedding, which becomes the left sibling of the next goal.

Output indices follow ``OutputVocab``: operators ``[0, O)``, constants ``[O, O+C)``, number slots
``[O+C, O+C+M)``; leaf ``j`` (constant or number) is output ``O + j``.

Every weight is a 2-D ``nn.Linear``/``nn.Embedding`` matrix except ``predict.constant_embedding`` of
shape (1, C, H), GTS's ``Prediction.embedding_weight``, which SMC-Bench never prunes (its masking only
takes 2-D and 4-D tensors).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

# Score of an output the problem cannot use (a number slot beyond its own quantities); finite, as in
# GTS, so a softmax over a row never sees only -inf.
MASKED = -1e12


def masked(scores: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
    """``scores`` with ``blocked`` entries at ``MASKED``, or at the lowest finite value of a
    half-precision dtype (fp16 autocast cannot hold -1e12)."""
    return scores.masked_fill(blocked, max(MASKED, torch.finfo(scores.dtype).min))


@dataclass
class Memory:
    """What the decoder reads from the encoder, for B problems."""

    outputs: torch.Tensor        # (B, W, H) word encodings
    pad: torch.Tensor            # (B, W) True at padding words
    problem: torch.Tensor        # (B, H) root goal
    numbers: torch.Tensor        # (B, M, H) quantity encodings (zero where absent)
    number_present: torch.Tensor  # (B, M) True where the problem has that quantity

    def select(self, rows: torch.Tensor) -> "Memory":
        return Memory(self.outputs[rows], self.pad[rows], self.problem[rows], self.numbers[rows],
                      self.number_present[rows])


@dataclass(frozen=True)
class TreeState:
    """One partial expression: pending goals (top = last), the sub-tree stack as (embedding, finished)
    pairs, the emitted output indices and the beam score. Tuples, so beams share them cheaply."""

    goals: tuple
    subtrees: tuple = ()
    tokens: tuple = ()
    score: float = 0.0

    @property
    def done(self) -> bool:
        return not self.goals

    @property
    def left_sibling(self) -> Optional[torch.Tensor]:
        if self.subtrees and self.subtrees[-1][1]:
            return self.subtrees[-1][0]
        return None


def _gated(value: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    return torch.tanh(value) * torch.sigmoid(gate)


class Prediction(nn.Module):
    """Node vector, context and output scores for the goals on top of each stack (GTS ``Prediction``,
    with its ``TreeAttn`` and ``Score`` inlined)."""

    def __init__(self, hidden_size: int, num_operators: int, num_constants: int, dropout: float) -> None:
        super().__init__()
        h = hidden_size
        self.hidden_size = h
        self.dropout = nn.Dropout(dropout)
        # GTS: nn.Parameter(torch.randn(1, input_size, hidden_size)); 3-D, never pruned by SMC-Bench.
        self.constant_embedding = nn.Parameter(torch.randn(1, num_constants, h))
        self.concat_l = nn.Linear(h, h)
        self.concat_lg = nn.Linear(h, h)
        self.concat_r = nn.Linear(2 * h, h)
        self.concat_rg = nn.Linear(2 * h, h)
        self.ops = nn.Linear(2 * h, num_operators)
        self.attn = nn.Linear(2 * h, h)            # TreeAttn.attn over [q; word]
        self.attn_score = nn.Linear(h, 1)          # TreeAttn.score
        self.leaf_attn = nn.Linear(3 * h, h)       # Score.attn over [q; c; leaf]
        self.leaf_score = nn.Linear(h, 1, bias=False)  # Score.score

    def leaves(self, memory: Memory) -> torch.Tensor:
        """(B, C+M, H): constant embeddings followed by the number encodings."""
        batch = memory.numbers.size(0)
        constants = self.constant_embedding.expand(batch, -1, -1)
        return torch.cat((constants, memory.numbers), dim=1)

    def forward(self, goals: torch.Tensor, siblings: list, memory: Memory, leaves: torch.Tensor,
                leaf_blocked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows of ``goals`` (K, H) align with the rows of ``memory`` and ``leaves``; ``siblings[k]``
        is the (H,) embedding of goal k's finished left sibling, or None when goal k is a left child
        or the root; ``leaf_blocked`` (K, C+M) marks leaves that may not be chosen. Returns
        (scores (K, O+C+M), node vectors q (K, H), contexts (K, H))."""
        goal = self.dropout(goals)
        right = [k for k, s in enumerate(siblings) if s is not None]
        left = [k for k, s in enumerate(siblings) if s is None]
        q = torch.zeros_like(goal)
        if left:
            rows = torch.tensor(left, device=goal.device)
            part = goal[rows]
            q = q.index_copy(0, rows, _gated(self.concat_l(part), self.concat_lg(part)))
        if right:
            rows = torch.tensor(right, device=goal.device)
            sibling = self.dropout(torch.stack([siblings[k] for k in right]))
            joined = torch.cat((sibling, goal[rows]), dim=-1)
            q = q.index_copy(0, rows, _gated(self.concat_r(joined), self.concat_rg(joined)))

        query = self.dropout(q).unsqueeze(1).expand(-1, memory.outputs.size(1), -1)
        energy = torch.tanh(self.attn(torch.cat((query, memory.outputs), dim=-1)))
        energy = masked(self.attn_score(energy).squeeze(-1), memory.pad)
        weights = torch.softmax(energy, dim=-1)
        context = torch.bmm(weights.unsqueeze(1), memory.outputs).squeeze(1)

        leaf_input = self.dropout(torch.cat((q, context), dim=-1))
        candidates = self.dropout(leaves)
        expanded = leaf_input.unsqueeze(1).expand(-1, candidates.size(1), -1)
        hidden = torch.tanh(self.leaf_attn(torch.cat((expanded, candidates), dim=-1)))
        leaf_scores = masked(self.leaf_score(hidden).squeeze(-1), leaf_blocked)
        return torch.cat((self.ops(leaf_input), leaf_scores), dim=-1), q, context


class GenerateNode(nn.Module):
    """Left and right child goals of an operator node from q, its context and the operator's embedding."""

    def __init__(self, hidden_size: int, num_operators: int, embedding_size: int, dropout: float) -> None:
        super().__init__()
        width = 2 * hidden_size + embedding_size
        self.embeddings = nn.Embedding(num_operators, embedding_size)
        self.dropout = nn.Dropout(dropout)
        self.generate_l = nn.Linear(width, hidden_size)
        self.generate_lg = nn.Linear(width, hidden_size)
        self.generate_r = nn.Linear(width, hidden_size)
        self.generate_rg = nn.Linear(width, hidden_size)

    def forward(self, q: torch.Tensor, operators: torch.Tensor, context: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        label = self.embeddings(operators)
        joined = torch.cat((self.dropout(q), self.dropout(context), self.dropout(label)), dim=-1)
        left = _gated(self.generate_l(joined), self.generate_lg(joined))
        right = _gated(self.generate_r(joined), self.generate_rg(joined))
        return left, right, label


class Merge(nn.Module):
    """Sub-tree embedding of ``op(left, right)``."""

    def __init__(self, hidden_size: int, embedding_size: int, dropout: float) -> None:
        super().__init__()
        width = 2 * hidden_size + embedding_size
        self.dropout = nn.Dropout(dropout)
        self.merge = nn.Linear(width, hidden_size)
        self.merge_g = nn.Linear(width, hidden_size)

    def forward(self, operator: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        joined = torch.cat((self.dropout(operator), self.dropout(left), self.dropout(right)), dim=-1)
        return _gated(self.merge(joined), self.merge_g(joined))


class TreeDecoder(nn.Module):
    """Prediction + GenerateNode + Merge and the stack logic that drives them, for teacher forcing
    (``loss``) and for the beam search (``scores`` / ``advance``)."""

    def __init__(self, hidden_size: int, embedding_size: int, num_operators: int, num_constants: int,
                 num_slots: int, dropout: float) -> None:
        super().__init__()
        self.num_operators = num_operators
        self.num_constants = num_constants
        self.num_slots = num_slots
        self.predict = Prediction(hidden_size, num_operators, num_constants, dropout)
        self.generate = GenerateNode(hidden_size, num_operators, embedding_size, dropout)
        self.merge = Merge(hidden_size, embedding_size, dropout)

    @property
    def output_size(self) -> int:
        return self.num_operators + self.num_constants + self.num_slots

    def leaf_blocked(self, memory: Memory) -> torch.Tensor:
        """(B, C+M): constants are always allowed, number slots only for the problem's own numbers."""
        constants = torch.zeros(memory.number_present.size(0), self.num_constants, dtype=torch.bool,
                                device=memory.number_present.device)
        return torch.cat((constants, ~memory.number_present), dim=1)

    def initial_states(self, memory: Memory) -> list[TreeState]:
        return [TreeState(goals=(goal,)) for goal in memory.problem.unbind(0)]

    def scores(self, states: list[TreeState], memory: Memory, leaves: torch.Tensor,
               leaf_blocked: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prediction for the top goal of each (unfinished) state; row i of the memory tensors belongs
        to state i."""
        goals = torch.stack([state.goals[-1] for state in states])
        return self.predict(goals, [state.left_sibling for state in states], memory, leaves, leaf_blocked)

    def advance(self, states: list[TreeState], tokens: list[int], q: torch.Tensor, context: torch.Tensor,
                leaves: torch.Tensor, scores: Optional[list[float]] = None) -> list[TreeState]:
        """Apply output ``tokens[i]`` to ``states[i]`` (rows of ``q``, ``context`` and ``leaves``
        belong to state i); operators are expanded and sub-trees merged in batches."""
        ops = self.num_operators
        goals = [list(state.goals[:-1]) for state in states]
        subtrees = [list(state.subtrees) for state in states]
        op_rows = [i for i, token in enumerate(tokens) if token < ops]
        if op_rows:
            rows = torch.tensor(op_rows, device=q.device)
            labels = torch.tensor([tokens[i] for i in op_rows], device=q.device)
            left, right, label = self.generate(q[rows], labels, context[rows])
            for k, i in enumerate(op_rows):
                goals[i] += [right[k], left[k]]
                subtrees[i].append((label[k], False))
        current = {i: leaves[i, token - ops] for i, token in enumerate(tokens) if token >= ops}
        # Close finished sub-trees: every wave merges, for all rows that still can, the operator and
        # finished left operand on top of the stack with the operand just completed.
        waiting = [i for i in current if subtrees[i] and subtrees[i][-1][1]]
        while waiting:
            left_ops = [subtrees[i].pop() for i in waiting]
            operators = [subtrees[i].pop() for i in waiting]
            merged = self.merge(torch.stack([o[0] for o in operators]), torch.stack([l[0] for l in left_ops]),
                                torch.stack([current[i] for i in waiting]))
            for k, i in enumerate(waiting):
                current[i] = merged[k]
            waiting = [i for i in waiting if subtrees[i] and subtrees[i][-1][1]]
        for i, value in current.items():
            subtrees[i].append((value, True))
        return [TreeState(tuple(goals[i]), tuple(subtrees[i]), state.tokens + (tokens[i],),
                          state.score if scores is None else scores[i])
                for i, state in enumerate(states)]

    def loss(self, memory: Memory, targets: torch.Tensor, lengths: torch.Tensor,
             reduction: str = "mean") -> torch.Tensor:
        """Teacher-forced cross-entropy over the prefix targets (B, L), masked by ``lengths``: the mean
        over all target tokens of the batch (GTS's ``masked_cross_entropy``), or their sum."""
        leaves = self.predict.leaves(memory)
        blocked = self.leaf_blocked(memory)
        states = self.initial_states(memory)
        lengths_list = lengths.tolist()
        targets_list = targets.tolist()
        logits, gold = [], []
        for step in range(max(lengths_list, default=0)):
            active = [i for i, n in enumerate(lengths_list) if step < n and not states[i].done]
            if not active:
                break
            rows = torch.tensor(active, device=targets.device)
            sub = memory.select(rows)
            out, q, context = self.scores([states[i] for i in active], sub, leaves[rows], blocked[rows])
            logits.append(out)
            gold.append(targets[rows, step])
            moved = self.advance([states[i] for i in active], [targets_list[i][step] for i in active],
                                 q, context, leaves[rows])
            for i, state in zip(active, moved):
                states[i] = state
        if not logits:  # no target tokens at all
            return memory.problem.sum() * 0.0
        return F.cross_entropy(torch.cat(logits), torch.cat(gold), reduction=reduction)
