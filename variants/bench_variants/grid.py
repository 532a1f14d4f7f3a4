"""The study's grid of attention variants, expressed once.

    tie pattern (none, Q=K, K=V, Q=K=V) x KV heads (H, g, 1) x 2D positional correction (off, m)
    [x reading of the correction's P (rows and columns, or offsets i - j)]

Every named variant of "Do Transformers Need Three Projections?" (Kayyam et al., ICML 2026) is a
point of this grid; `presets.py` names them. One module implements the whole grid through
`torch.nn.functional.scaled_dot_product_attention`:

* the distinct projections are one fused `in_proj` whose output splits into the tied roles;
* fewer KV heads than query heads use SDPA's grouped-query path;
* the "+" correction S'_ij = S_ij * sum(w) + sum_c w_c P_ijc + b is linear in S, so it runs inside
  SDPA, not a hand-written softmax. The paper does not define its fixed P (n, n, m) exactly
  (UNCONFIRMED), and it has two natural readings (`Positional`), each exact to the formula:

  - ROWCOL, the paper's description and the default: the first channels of P encode the row i, the
    rest the column j (`sinusoid_2d`). Row channels depend on i only and b on nothing, so they add a
    constant to every score of row i, which softmax ignores; what remains is the scale sum(w) and a
    per-key bias c_j = sum_{column c} w_c P_jc. Both enter SDPA's fast kernels through one extra head
    dimension: q' = [sum(w) q, sqrt(d)], k' = [k, c_j + b], v' = [v, 0], scale 1/sqrt(d). (A learned
    (T, T) float mask would force the slow math kernel for its gradient.)
  - RELATIVE: all m channels encode the offset i - j (`sinusoid_relative`), so P w is a learned
    relative-position bias, a Toeplitz (T, T) matrix that softmax does not cancel. It enters SDPA as a
    float mask (-inf where a bool mask disallows), paying the cost the fold above avoids; S * sum(w)
    rides on the query. The (2T - 1, m) table of offsets is cached per (T, device).

KV cache per token per layer = (1 if K=V else 2) x kv_heads x d_head x bytes per element.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import (
    Attention,
    AttentionConfig,
    CacheLayout,
    LayerCache,
    Supports,
    VariantSpec,
    offset_index,
    row_channels,
    sinusoid_1d,
    sinusoid_2d,
    sinusoid_offsets,
    sinusoid_relative,
)


class Tie(enum.Enum):
    """Which of the query, key and value projections are one and the same."""

    NONE = "none"  # QKV: three projections
    QK = "q=k"  # Q=K-V: symmetric scores
    KV = "k=v"  # Q-K=V: the value is the key; cache K only
    QKV = "q=k=v"  # one projection

    @property
    def roles(self) -> tuple[int, int, int]:
        """Index of the projection that plays query, key and value."""
        return {Tie.NONE: (0, 1, 2), Tie.QK: (0, 0, 1), Tie.KV: (0, 1, 1), Tie.QKV: (0, 0, 0)}[self]

    @property
    def caches_value_separately(self) -> bool:
        return self.roles[1] != self.roles[2]

    @property
    def query_is_key(self) -> bool:
        return self.roles[0] == self.roles[1]


class Positional(enum.Enum):
    """Which reading of the "+" correction's fixed 2D tensor P (the paper leaves it UNCONFIRMED)."""

    ROWCOL = "rowcol"  # channels of the row i and of the column j: a temperature and a per-key bias
    RELATIVE = "relative"  # channels of the offset i - j: a temperature and a relative-position bias


def sdpa_mask(
    t_q: int, t_k: int, causal: bool, pad_mask_BT: Tensor | None, device: torch.device
) -> tuple[Tensor | None, bool]:
    """SDPA's mask for t_q new queries over t_k keys (the queries are the last t_q positions), and
    whether to take SDPA's fused causal path instead. The mask is bool, True where attention is
    allowed, broadcastable to (B, H, t_q, t_k); None: everything is allowed.
    """
    simple_causal = causal and pad_mask_BT is None
    if simple_causal and t_k == t_q:
        return None, True  # SDPA's fused causal path
    if simple_causal and t_q == 1:  # one new token sees the whole cache: no mask
        return None, False
    return allowed_mask(t_q, t_k, causal, pad_mask_BT, device), False


def allowed_mask(t_q: int, t_k: int, causal: bool, pad_mask_BT: Tensor | None, device: torch.device) -> Tensor | None:
    """Bool, True where query i (of the last t_q positions) may see key j, broadcastable to (B, H, t_q, t_k)."""
    allowed: Tensor | None = None
    if causal:
        offset = t_k - t_q
        q_pos = torch.arange(t_q, device=device)[:, None] + offset
        allowed = torch.arange(t_k, device=device)[None, :] <= q_pos  # (t_q, t_k)
    if pad_mask_BT is not None:
        keep_B11T = ~pad_mask_BT[:, None, None, :]
        allowed = keep_B11T if allowed is None else allowed & keep_B11T
    return allowed


class SharedProjectionAttention(Attention):
    """Multi-head attention with tied projections, grouped KV heads and an optional 2D correction."""

    def __init__(
        self,
        config: AttentionConfig,
        tie: Tie,
        kv_heads: int,
        positional_channels: int = 0,
        plus_scale: bool = True,
        plus_bias: bool = True,
        positional: Positional = Positional.ROWCOL,
    ) -> None:
        super().__init__()
        self.tie, self.n_heads, self.kv_heads = tie, config.n_heads, kv_heads
        self.head_dim, self.dropout = config.head_dim, config.dropout
        # head count of each distinct projection, in role order: the query projection has all H heads
        n_proj = max(tie.roles) + 1
        self.proj_heads = [config.n_heads] + [kv_heads] * (n_proj - 1)
        self.in_proj = nn.Linear(config.d_model, sum(self.proj_heads) * self.head_dim, bias=config.bias)
        self.out_proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.positional_channels = positional_channels
        # the "+" ablations: the score scale sum(w) frozen at 1, or the per-key bias c_j + b left out
        self.plus_scale, self.plus_bias = plus_scale, plus_bias
        self.relative = positional is Positional.RELATIVE and positional_channels > 0
        if positional_channels:
            # the 1x1 map folding the m positional channels (plus the score) back to one score;
            # initialised to sum(w) = 1 so the block starts as plain attention plus a small bias
            self.pos_weight = nn.Parameter(torch.full((positional_channels,), 1.0 / positional_channels))
            if plus_bias:
                self.pos_bias = nn.Parameter(torch.zeros(()))
        self._pos_table: dict[tuple[int, torch.device], Tensor] = {}
        self._offset_table: dict[tuple[int, torch.device], tuple[Tensor, Tensor]] = {}

    def _project(self, x_BTD: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        B, T, _ = x_BTD.shape
        heads_BNTK = self.in_proj(x_BTD).view(B, T, -1, self.head_dim).transpose(1, 2)  # (B, sum heads, T, hd)
        parts = heads_BNTK.split(self.proj_heads, dim=1)
        q, k, v = (parts[i] for i in self.tie.roles)
        return q, k, v

    def _column_bias(self, n: int, device: torch.device) -> Tensor:
        """(n,) per-key bias c_j: the part of the 2D correction that softmax does not cancel."""
        n_row = row_channels(self.positional_channels)
        key = (n, device)
        if key not in self._pos_table:
            self._pos_table[key] = sinusoid_1d(n, self.positional_channels - n_row, device=device)
        return self._pos_table[key].to(self.pos_weight.dtype) @ self.pos_weight[n_row:]

    def _fold_positional(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Append the extra head dimension that carries the "+" correction into SDPA."""
        t_q, t_k = q.shape[2], k.shape[2]
        q_col = torch.full((*q.shape[:2], t_q, 1), math.sqrt(self.head_dim), dtype=q.dtype, device=q.device)
        # b rides along with c_j: softmax cancels it exactly (its gradient is 0), as in the paper's formula
        if self.plus_bias:
            col_bias_S = self._column_bias(t_k, k.device) + self.pos_bias
        else:
            col_bias_S = torch.zeros(t_k, dtype=k.dtype, device=k.device)
        k_col = col_bias_S.to(k.dtype)[None, None, :, None].expand(*k.shape[:2], t_k, 1)
        q = torch.cat([q * self._score_scale(), q_col], dim=-1)  # S * sum(w)
        return q, torch.cat([k, k_col], dim=-1), F.pad(v, (0, 1))

    def _relative_bias(self, t_q: int, t_k: int, device: torch.device) -> Tensor:
        """(t_q, t_k) sum_c w_c P_ijc + b with P of the offsets i - j; queries are the last t_q positions."""
        key = (t_k, device)
        if key not in self._offset_table:
            m = self.positional_channels
            self._offset_table[key] = (sinusoid_offsets(t_k, m, device=device), offset_index(t_k, device=device))
        table_OM, index_TT = self._offset_table[key]
        bias_O = table_OM.to(self.pos_weight.dtype) @ self.pos_weight  # one value per offset: (2 t_k - 1,)
        # b rides along: softmax cancels it exactly (its gradient is 0), as in the paper's formula
        return bias_O[index_TT[t_k - t_q :]] + self.pos_bias

    def _score_scale(self) -> Tensor:
        """sum(w), the factor the "+" correction puts on S (1, constant, in the frozen-scale ablation)."""
        total = self.pos_weight.sum()
        return total if self.plus_scale else torch.ones_like(total)

    def _cached(self, k_BGTK: Tensor, v_BGTK: Tensor, cache: LayerCache | None) -> tuple[Tensor, Tensor]:
        """The keys and values to attend over: the new ones, after everything `cache` holds."""
        if cache is None:
            return k_BGTK, v_BGTK
        if self.tie.caches_value_separately:
            k_BGTK, v_BGTK = cache.append(k_BGTK, v_BGTK)
            return k_BGTK, v_BGTK
        (k_BGTK,) = cache.append(k_BGTK)
        return k_BGTK, k_BGTK

    def _masking(
        self, t_q: int, t_k: int, causal: bool, pad_mask_BT: Tensor | None, cache: LayerCache | None, q: Tensor
    ) -> tuple[Tensor | None, bool]:
        """(attn_mask, is_causal) for SDPA: the fused causal path where it applies; the relative bias as floats."""
        if self.relative and self.plus_bias:
            allowed = allowed_mask(t_q, t_k, causal, pad_mask_BT, q.device)
            bias_TT = self._relative_bias(t_q, t_k, q.device).to(q.dtype)
            return (bias_TT if allowed is None else torch.where(allowed, bias_TT, -math.inf)), False
        return sdpa_mask(t_q, t_k, causal, pad_mask_BT, q.device)

    def forward(
        self,
        x_BTD: Tensor,
        *,
        causal: bool = False,
        pad_mask_BT: Tensor | None = None,
        cache: LayerCache | None = None,
    ) -> Tensor:
        B, T, D = x_BTD.shape
        q_BHTK, k_BGTK, v_BGTK = self._project(x_BTD)
        k_BGTK, v_BGTK = self._cached(k_BGTK, v_BGTK, cache)
        mask, is_causal = self._masking(T, k_BGTK.shape[2], causal, pad_mask_BT, cache, q_BHTK)
        if self.relative:
            q_BHTK = q_BHTK * self._score_scale()  # S * sum(w); the bias is in the mask
        elif self.positional_channels:
            q_BHTK, k_BGTK, v_BGTK = self._fold_positional(q_BHTK, k_BGTK, v_BGTK)
        y_BHTK = F.scaled_dot_product_attention(
            q_BHTK,
            k_BGTK,
            v_BGTK,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal,
            scale=1.0 / math.sqrt(self.head_dim),
            enable_gqa=self.kv_heads != self.n_heads,
        )[..., : self.head_dim]
        return self.out_proj(y_BHTK.transpose(1, 2).reshape(B, T, D))

    @torch.no_grad()
    def scores(self, x_BTD: Tensor) -> Tensor:
        """Pre-softmax scores (B, H, T, T) without masks, by the paper's formula (for analysis and tests).

        With the "+" correction: S' = S * sum(w) + P @ w + b, with the full 2D tensor P of the module's
        reading (row and column channels, or channels of the offset i - j).
        """
        q_BHTK, k_BGTK, _ = self._project(x_BTD)
        k_BHTK = k_BGTK.repeat_interleave(self.n_heads // self.kv_heads, dim=1)
        s_BHTT = (q_BHTK @ k_BHTK.transpose(-1, -2)) / math.sqrt(self.head_dim)
        if self.positional_channels:
            T = x_BTD.shape[1]
            full_p = sinusoid_relative if self.relative else sinusoid_2d
            table_TTM = full_p(T, self.positional_channels, device=x_BTD.device).to(s_BHTT.dtype)
            s_BHTT = s_BHTT * self._score_scale()
            if self.plus_bias:
                s_BHTT = s_BHTT + table_TTM @ self.pos_weight + self.pos_bias
        return s_BHTT


@dataclass(frozen=True)
class SharedProjectionVariant(VariantSpec):
    """A point of the study's grid. `kv_heads=None` means one KV head per query head.

    `positional` picks the reading of the "+" correction's P (see the module docstring); the default,
    rows and columns, leaves `describe()` and so every cell id as they were before the second reading.

    Reference: Kayyam, Madan Gopal, Lewis, "Do Transformers Need Three Projections?", ICML 2026;
    GQA/MQA: Ainslie et al. 2023, Shazeer 2019; relative-position bias: Shaw et al. 2018, Raffel et al. 2020.
    """

    id: str
    display_name: str
    tie: Tie = Tie.NONE
    kv_heads: int | None = None
    positional_channels: int = 0
    version: str = "1"
    summary: str = ""
    plus_scale: bool = True  # ablation: False freezes the "+" score scale sum(w) at 1
    plus_bias: bool = True  # ablation: False leaves out the "+" per-key bias
    ablation_of: str = ""  # the id of the variant an ablation (or a second reading of "+") diagnoses
    positional: Positional = Positional.ROWCOL  # the reading of the "+" correction's P

    @property
    def supports(self) -> Supports:  # type: ignore[override]
        # the paper uses the "+" correction on non-causal tasks only; its bias is (T, T) per call
        plus = self.positional_channels > 0
        return Supports(causal=not plus, key_padding=True, decoding=not plus, variable_length=True)

    @property
    def reference(self) -> str:  # type: ignore[override]
        study = "Kayyam, Madan Gopal, Lewis, ICML 2026"
        if self.tie == Tie.NONE and self.kv_heads is None:
            return "Vaswani et al., NeurIPS 2017 (arXiv:1706.03762)"
        if self.kv_heads == 1:
            mqa = "Shazeer 2019 (arXiv:1911.02150)"
            return f"MQA: {mqa}; {study}" if self.tie == Tie.KV else mqa
        if self.kv_heads is not None:
            gqa = "GQA: Ainslie et al., EMNLP 2023 (arXiv:2305.13245)"
            return f"{gqa}; {study}" if self.tie == Tie.KV else gqa
        return study

    def n_kv_heads(self, config: AttentionConfig) -> int:
        return config.n_heads if self.kv_heads is None else self.kv_heads

    def check(self, config: AttentionConfig) -> str | None:
        g, h = self.n_kv_heads(config), config.n_heads
        if g <= 0:
            return f"kv_heads must be positive, got {g}"
        if g > h or h % g:
            return f"{g} KV heads cannot be shared evenly by {h} query heads (needs H % g == 0)"
        if self.tie.query_is_key and g != h:
            return f"tying Q=K needs as many KV heads as query heads ({h}), got {g}"
        return None

    def mechanism(self, config: AttentionConfig) -> tuple[object, ...] | None:
        # the grid point this preset lands on at `config`: GQA-4 at H=4 is QKV, Q-GQA-4 at H=4 is Q-K=V
        plus = (self.positional_channels, self.plus_scale, self.plus_bias) if self.positional_channels else (0,)
        reading = (self.positional.value,) if self._relative else ()  # the default reading keeps its old key
        return ("shared-projection", self.tie.value, self.n_kv_heads(config), *plus, *reading)

    def ablates(self) -> str | None:
        return self.ablation_of or None

    def coincidence(self, config: AttentionConfig) -> str:
        g, h = self.n_kv_heads(config), config.n_heads
        return f"at H={h} ({g} KV heads = {h} query heads)" if g == h else f"at H={h}"

    def build(self, config: AttentionConfig) -> Attention:
        reason = self.check(config)
        if reason:
            raise ValueError(f"variant {self.id!r} cannot run n_heads={config.n_heads}: {reason}")
        return SharedProjectionAttention(
            config,
            self.tie,
            self.n_kv_heads(config),
            self.positional_channels,
            self.plus_scale,
            self.plus_bias,
            self.positional,
        )

    def cache_layout(self, config: AttentionConfig) -> CacheLayout:
        per_head = 2 if self.tie.caches_value_separately else 1
        return CacheLayout(tensors_per_head=per_head, kv_heads=self.n_kv_heads(config), head_dim=config.head_dim)

    def describe(self) -> dict[str, str]:
        g = "H" if self.kv_heads is None else str(self.kv_heads)
        pos = f"m={self.positional_channels}" if self.positional_channels else "off"
        # only the relative reading and ablations carry more, so the study's variants keep their cell ids
        pos += ", offsets i-j" if self._relative else ""
        out = {**super().describe(), "tie": self.tie.value, "kv_heads": g, "positional_2d": pos}
        if self.ablation_of:
            bias = "relative-position bias" if self._relative else "per-key bias"
            out["ablates"] = self.ablation_of
            out["plus_parts"] = ", ".join(
                part for part, on in (("learned scale sum(w)", self.plus_scale), (bias, self.plus_bias)) if on
            )
        return out

    @property
    def _relative(self) -> bool:
        return self.positional is Positional.RELATIVE and self.positional_channels > 0
