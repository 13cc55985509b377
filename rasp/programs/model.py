"""The constrained transformer of "Learning Transformer Programs" (Friedman et al., 2023).

The residual stream is a list of named variables, never a dense vector:

* categorical variables, each a one-hot over ``d_var`` values: ``tokens``, ``positions``, then
  per layer the output of every categorical head and MLP (``attn_0_1``, ``mlp_0_0``,
  ``num_mlp_0_0``);
* numerical variables, one scalar each: ``ones`` (1 everywhere), then per layer the output
  of every numerical head (``num_attn_0_0``).

Every discrete choice is a distribution trained through Gumbel-softmax samples: which
variable a head reads for its queries, keys and values and an MLP for its two inputs, each
row of a head's predicate matrix (query value -> key value, one-to-one), the attention
itself, and each MLP's output value. With ``hard=True`` every choice is its argmax: that is
the *discretised program*, which ``decompile_program`` and ``program_weights`` reproduce
exactly. Its semantics:

* a categorical head at query ``i`` selects the matching key (``predicate[q_i] == k_j``)
  closest to ``i`` (ties: the earlier key; the query itself last), or BOS when none
  matches, and copies its value variable from there (``select_closest`` in the paper);
* a numerical head counts the matching keys other than BOS (``aggregate_sum`` of ``ones``,
  i.e. RASP's selector width);
* an MLP maps its two input values to the argmax of its output logits (a lookup table);
* the output is the argmax of a linear classifier over every variable, whose weights are
  rounded to multiples of 1/256 so that the classifier sums exactly in any float format.

Example:
    >>> model = ProgramModel(ProgramArchitecture(1, 1, 1), n_tokens=4, n_ctx=5, n_out=3)
    >>> model(torch.zeros(2, 5, dtype=torch.long), hard=True).shape
    torch.Size([2, 5, 3])
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from rasp.programs.config import ProgramArchitecture

#: Classifier weights are rounded to multiples of this in the discretised program.
CLASSIFIER_QUANTUM = 1.0 / 256


def closeness(n_ctx: int) -> torch.Tensor:
    """``[query, key]`` priority of each key (higher wins among matches): nearer first,
    the earlier of two equally near keys first, the query itself last; all distinct.

    Example:
        >>> closeness(3)[2].tolist()
        [3, 5, 0]
    """
    prio = torch.zeros(n_ctx, n_ctx, dtype=torch.long)
    for i in range(n_ctx):
        for j in range(n_ctx):
            if i == j:
                continue
            d = abs(i - j)
            rank = 2 * d - 1 if j < i else 2 * d
            prio[i, j] = 2 * n_ctx - rank
    return prio


def _gumbel_softmax(logits: torch.Tensor, tau: float) -> torch.Tensor:
    # rand + two logs: about twice as fast on CPU as F.gumbel_softmax's exponential_().
    u = torch.rand_like(logits).clamp_(1e-10, 1.0)
    return ((logits - torch.log(-torch.log(u))) / tau).softmax(-1)


def _sample(logits: torch.Tensor, tau: float, hard: bool) -> torch.Tensor:
    if hard:
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
    return _gumbel_softmax(logits, tau)


class ProgramLayer(nn.Module):
    """One layer: categorical and numerical heads, then categorical and numerical MLPs.

    Variables are stored value-major: categorical ``[B, T, d_var, n_cat]`` (so reading a
    variable is one matmul with a one-hot choice) and numerical ``[B, T, n_num]``.
    """

    def __init__(self, arch: ProgramArchitecture, n_cat: int, n_num: int, d_var: int) -> None:
        super().__init__()
        self.arch, self.n_cat, self.n_num, self.d_var = arch, n_cat, n_num, d_var
        hc, hn, mc, mn, h = (
            arch.n_heads_cat,
            arch.n_heads_num,
            arch.n_mlps_cat,
            arch.n_mlps_num,
            arch.d_mlp,
        )

        def read(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape) / math.sqrt(max(shape[-1], 1)))

        # Heads: [q, k, v] variable choices and predicate rows (query value -> key value).
        self.cat_read = read(3, hc, n_cat)
        self.cat_pred = read(hc, d_var, d_var)
        self.num_read = read(2, hn, n_cat)
        self.num_pred = read(hn, d_var, d_var)
        # MLPs: two input choices each, one hidden layer, a categorical output.
        self.mlp_read = read(mc, 2, n_cat + hc)
        self.mlp_in = nn.Parameter(torch.randn(mc, 2 * d_var, h) / math.sqrt(h))
        self.mlp_b_in = nn.Parameter(torch.zeros(mc, 1, h))
        self.mlp_out = nn.Parameter(torch.randn(mc, h, d_var) / math.sqrt(d_var))
        self.mlp_b_out = nn.Parameter(torch.zeros(mc, 1, d_var))
        self.num_mlp_read = read(mn, 2, n_num + hn)
        self.num_mlp_in = nn.Parameter(torch.randn(mn, 2, h) / math.sqrt(h))
        self.num_mlp_b_in = nn.Parameter(torch.zeros(mn, 1, h))
        self.num_mlp_out = nn.Parameter(torch.randn(mn, h, d_var) / math.sqrt(d_var))
        self.num_mlp_b_out = nn.Parameter(torch.zeros(mn, 1, d_var))

    def forward(
        self,
        cat: torch.Tensor,
        num: torch.Tensor,
        keys: torch.Tensor,
        prio: torch.Tensor,
        tau: float,
        hard: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``cat`` ``[B, T, d_var, n_cat]``, ``num`` ``[B, T, n_num]``, ``keys`` ``[B, T, T]``
        (query may see key) -> the same with this layer's variables appended."""
        arch = self.arch
        new_cat = [cat]
        counts = num[..., :0]
        if arch.n_heads_cat:
            new_cat.append(self._cat_heads(cat, keys, prio, tau, hard))
        if arch.n_heads_num:
            counts = self._num_heads(cat, keys, tau, hard)
        mid_cat = torch.cat(new_cat, dim=-1)
        mid_num = torch.cat([num, counts], dim=-1)
        b, t = cat.shape[:2]
        if arch.n_mlps_cat:
            sel = _sample(self.mlp_read, tau, hard).flatten(0, 1)  # [2M, C]
            x = (mid_cat @ sel.T).view(b * t, self.d_var, arch.n_mlps_cat, 2)
            x = x.permute(2, 0, 3, 1).reshape(arch.n_mlps_cat, b * t, 2 * self.d_var)
            new_cat.append(self._mlp(x, "mlp", tau, hard, b, t))
        if arch.n_mlps_num:
            sel = _sample(self.num_mlp_read, tau, hard).flatten(0, 1)  # [2M, N]
            x = (mid_num @ sel.T).view(b * t, arch.n_mlps_num, 2).transpose(0, 1)
            new_cat.append(self._mlp(x, "num_mlp", tau, hard, b, t))
        return torch.cat(new_cat, dim=-1), mid_num

    def _reads(self, cat: torch.Tensor, read: torch.Tensor, tau: float, hard: bool):
        """The variables each head reads: ``[r, B, H, T, d_var]`` for r in q, k(, v)."""
        r, h = read.shape[:2]
        sel = _sample(read, tau, hard).flatten(0, 1)  # [r*H, C]
        x = cat @ sel.T  # [B, T, V, r*H]
        b, t, v = x.shape[:3]
        return x.view(b, t, v, r, h).permute(3, 0, 4, 1, 2)

    def _score(self, q, k, pred, tau, hard):
        pred = _sample(pred, tau, hard)  # [H, V(query), V(key)]
        return (q @ pred) @ k.transpose(-1, -2)  # [B, H, T(query), T(key)]

    def _cat_heads(self, cat, keys, prio, tau, hard):
        q, k, values = self._reads(cat, self.cat_read, tau, hard)
        score = self._score(q, k, self.cat_pred, tau, hard)
        mask = keys[:, None]  # [B, 1, T, T]
        if hard:
            matched = (score > 0.5) & mask
            best = torch.where(matched, prio, -1).argmax(-1)
            best = torch.where(matched.any(-1), best, 0)  # no match: BOS
            attn = F.one_hot(best, score.shape[-1]).to(score.dtype)
        else:
            total = (score * mask).sum(-1)
            default = F.relu(1.0 - total / (total + 1e-10))
            score = torch.cat([score[..., :1] + default[..., None], score[..., 1:]], dim=-1)
            t = score.shape[-1]
            bias = (prio.to(score.dtype) - 2 * t) / t  # nearer keys a little higher
            logits = (score + 1e-20).log() + bias
            logits = logits.masked_fill(~mask, -1e30) / math.sqrt(self.d_var)
            attn = _gumbel_softmax(logits, tau)
        return (attn @ values).permute(0, 2, 3, 1)  # [B, T, V, H]

    def _num_heads(self, cat, keys, tau, hard):
        q, k = self._reads(cat, self.num_read, tau, hard)
        score = self._score(q, k, self.num_pred, tau, hard)
        mask = keys.clone()
        mask[..., 0] = False  # BOS is never counted
        if hard:
            score = (score > 0.5).to(score.dtype)
        return (score * mask[:, None]).sum(-1).transpose(1, 2)  # [B, T, H]

    def _mlp(self, x, prefix, tau, hard, b, t):
        w_in, b_in = getattr(self, f"{prefix}_in"), getattr(self, f"{prefix}_b_in")
        w_out, b_out = getattr(self, f"{prefix}_out"), getattr(self, f"{prefix}_b_out")
        logits = torch.baddbmm(b_out, F.relu(torch.baddbmm(b_in, x, w_in)), w_out)  # [M, BT, V]
        if hard:
            out = F.one_hot(logits.argmax(-1), self.d_var).to(x.dtype)
        else:
            out = _gumbel_softmax(logits.log_softmax(-1), tau)
        return out.permute(1, 2, 0).reshape(b, t, self.d_var, -1)  # [B, T, V, M]

    def mlp_logits(self, prefix: str, index: int, x: torch.Tensor) -> torch.Tensor:
        """Output logits of one MLP for inputs ``[n, 2 * d_var]`` (categorical) or ``[n, 2]``."""
        w_in, b_in = getattr(self, f"{prefix}_in")[index], getattr(self, f"{prefix}_b_in")[index]
        w_out = getattr(self, f"{prefix}_out")[index]
        b_out = getattr(self, f"{prefix}_b_out")[index]
        return F.relu(x @ w_in + b_in) @ w_out + b_out


class ProgramModel(nn.Module):
    """A Transformer Program in training: continuous parameters of discrete choices.

    Args:
        arch: the architecture.
        n_tokens: input ids including BOS (id 0).
        n_ctx: positions including BOS.
        n_out: output classes.
        causal: queries see only keys at or before them.
    """

    def __init__(
        self,
        arch: ProgramArchitecture,
        *,
        n_tokens: int,
        n_ctx: int,
        n_out: int,
        causal: bool = False,
    ) -> None:
        super().__init__()
        self.arch, self.n_tokens, self.n_ctx, self.n_out, self.causal = (
            arch,
            n_tokens,
            n_ctx,
            n_out,
            causal,
        )
        self.d_var = d_var = max(n_tokens, n_ctx)
        layers = []
        n_cat, n_num = 2, 1
        for _ in range(arch.n_layers):
            layers.append(ProgramLayer(arch, n_cat, n_num, d_var))
            n_cat += arch.n_heads_cat + arch.mlps_per_layer
            n_num += arch.n_heads_num
        self.layers = nn.ModuleList(layers)
        self.n_cat, self.n_num = n_cat, n_num
        self.classifier = nn.Parameter(torch.randn(n_cat, d_var, n_out) / math.sqrt(n_out))
        self.classifier_num = nn.Parameter(torch.randn(n_num, n_out) / math.sqrt(n_out))
        self.register_buffer("prio", closeness(n_ctx), persistent=False)

    def variables(self) -> tuple[list[str], list[str]]:
        """Names of the categorical and the numerical variables, in residual order."""
        a = self.arch
        cat, num = ["tokens", "positions"], ["ones"]
        for layer in range(a.n_layers):
            cat += [f"attn_{layer}_{h}" for h in range(a.n_heads_cat)]
            cat += [f"mlp_{layer}_{m}" for m in range(a.n_mlps_cat)]
            cat += [f"num_mlp_{layer}_{m}" for m in range(a.n_mlps_num)]
            num += [f"num_attn_{layer}_{h}" for h in range(a.n_heads_num)]
        return cat, num

    def key_mask(self, valid: torch.Tensor) -> torch.Tensor:
        """``[B, T, T]``: query ``i`` may attend to key ``j`` (key not padding; causal)."""
        keys = valid[:, None, :].expand(-1, valid.shape[1], -1)
        if self.causal:
            t = valid.shape[1]
            keys = keys & torch.ones(t, t, dtype=torch.bool, device=valid.device).tril()
        return keys

    def residual(
        self, tokens: torch.Tensor, valid: torch.Tensor | None = None, *, tau: float = 1.0,
        hard: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """All variables: ``[B, T, d_var, n_cat]`` one-hots and ``[B, T, n_num]`` numbers."""
        b, t = tokens.shape
        if valid is None:
            valid = torch.ones(b, t, dtype=torch.bool, device=tokens.device)
        eye = torch.eye(self.d_var, device=tokens.device)
        cat = torch.stack([eye[tokens], eye[:t].expand(b, t, -1)], dim=-1)
        num = torch.ones(b, t, 1, device=tokens.device)
        keys = self.key_mask(valid)
        prio = self.prio[:t, :t].to(tokens.device)
        for layer in self.layers:
            cat, num = layer(cat, num, keys, prio, tau, hard)
        return cat, num

    def classifier_weights(self, hard: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``[n_cat, d_var, n_out]`` and ``[n_num, n_out]``, rounded to ``CLASSIFIER_QUANTUM``
        when ``hard``."""
        if hard:
            q = CLASSIFIER_QUANTUM
            return torch.round(self.classifier / q) * q, torch.round(self.classifier_num / q) * q
        return self.classifier, self.classifier_num

    def forward(
        self, tokens: torch.Tensor, valid: torch.Tensor | None = None, *, tau: float = 1.0,
        hard: bool = False,
    ) -> torch.Tensor:  # fmt: skip
        """``[B, T, n_out]`` logits for ``[B, T]`` ids (BOS first); ``hard``: the discrete program
        (its logits in float64, which sums the rounded classifier exactly)."""
        cat, num = self.residual(tokens, valid, tau=tau, hard=hard)
        w_cat, w_num = self.classifier_weights(hard)
        if hard:
            cat, num, w_cat, w_num = cat.double(), num.double(), w_cat.double(), w_num.double()
        b, t = tokens.shape
        flat = cat.transpose(2, 3).reshape(b, t, -1)  # var-major, like w_cat.flatten(0, 1)
        return flat @ w_cat.flatten(0, 1) + num @ w_num
