"""Backbones that take any registered attention variant: GPT-style LM, encoder, timm ViT adapter."""

from .blocks import Block, BlockConfig
from .encoder import Encoder, EncoderConfig
from .gpt import GPT, GPTConfig

__all__ = ["GPT", "Block", "BlockConfig", "Encoder", "EncoderConfig", "GPTConfig"]
