"""Attention variants for `bench`: the contract (`base`), the study's grid (`grid`) and its presets."""
