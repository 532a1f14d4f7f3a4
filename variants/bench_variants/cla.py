"""Cross-layer attention (CLA): K and V computed once per group of `share_layers` layers.

Mechanism: the first layer of each group (the leader) projects keys and values as any point of the
study's grid does (so CLA crosses Q-K=V and MQA); the other layers of the group project queries only
and attend over the leader's keys and values, in training and in decoding alike. A stack built with
`build_layers` links them; the backbone hands the whole group one cache.
Reference: Brandon et al., "Reducing Transformer Key-Value Cache Size with Cross-Layer Attention",
2024 (arXiv:2405.12981).
Cache per token per layer: (1 if K=V else 2) x kv_heads x d_head x b / share_layers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import Tensor

from .base import Attention, AttentionConfig, CacheSpec, LayerCache, Supports
from .grid import SharedProjectionAttention, SharedProjectionVariant, Tie


class LeaderAttention(SharedProjectionAttention):
    """A grid attention that keeps the keys and values it attended over for the rest of its group."""

    shared: tuple[Tensor, Tensor] | None = None

    def _cached(self, k_BGTK: Tensor, v_BGTK: Tensor, cache: LayerCache | None) -> tuple[Tensor, Tensor]:
        self.shared = super()._cached(k_BGTK, v_BGTK, cache)
        return self.shared


class FollowerAttention(SharedProjectionAttention):
    """Queries of its own over its leader's keys and values; it caches nothing."""

    def __init__(self, config: AttentionConfig, leader: LeaderAttention) -> None:
        # one projection of H heads (Tie.QKV's layout) is exactly the follower's query projection
        super().__init__(config, Tie.QKV, leader.kv_heads)
        self._leader = (leader,)  # a tuple: the leader's parameters stay registered once, in its own layer

    def _project(self, x_BTD: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        B, T, _ = x_BTD.shape
        q_BHTK = self.in_proj(x_BTD).view(B, T, -1, self.head_dim).transpose(1, 2)
        shared = self._leader[0].shared
        if shared is None:
            raise RuntimeError("a CLA follower ran before its leader: call the stack's layers in order")
        return q_BHTK, *shared

    def _cached(self, k_BGTK: Tensor, v_BGTK: Tensor, cache: LayerCache | None) -> tuple[Tensor, Tensor]:
        return k_BGTK, v_BGTK  # the leader's, cache included


@dataclass(frozen=True)
class CrossLayerVariant(SharedProjectionVariant):
    """A point of the study's grid whose keys and values are shared by `share_layers` adjacent layers."""

    share_layers: int = 2

    @property
    def supports(self) -> Supports:  # type: ignore[override]
        return Supports(non_causal=False)  # a decoder cache design: it runs where a causal model decodes

    @property
    def reference(self) -> str:  # type: ignore[override]
        own = "Brandon et al. 2024 (CLA, arXiv:2405.12981)"
        grid = super().reference
        return own if "Vaswani" in grid else f"{own}; {grid}"

    def check(self, config: AttentionConfig) -> str | None:
        if self.share_layers < 1:
            return f"share_layers must be at least 1, got {self.share_layers}"
        return super().check(config)

    def mechanism(self, config: AttentionConfig) -> tuple[object, ...] | None:
        return ("cross-layer", self.share_layers, *(super().mechanism(config) or ()))

    def build(self, config: AttentionConfig) -> Attention:
        """One layer alone: a leader with nobody to share with."""
        return self.build_layers(config, 1)[0]

    def build_layers(self, config: AttentionConfig, n_layers: int) -> list[Attention]:
        reason = self.check(config)
        if reason:
            raise ValueError(f"variant {self.id!r} cannot run n_heads={config.n_heads}: {reason}")
        layers: list[Attention] = []
        leader = LeaderAttention(config, self.tie, self.n_kv_heads(config))
        for i in range(n_layers):
            if i % self.share_layers == 0:
                leader = LeaderAttention(config, self.tie, self.n_kv_heads(config)) if i else leader
                layers.append(leader)
            else:
                layers.append(FollowerAttention(config, leader))
        return layers

    def cache_spec(self, config: AttentionConfig) -> CacheSpec:
        spec = self.cache_layout(config).spec()
        formula = f"{spec.formula} / {self.share_layers} layers"
        return dataclasses.replace(spec, share_layers=self.share_layers, formula=formula)

    def describe(self) -> dict[str, str]:
        return {**super().describe(), "share_layers": str(self.share_layers)}
