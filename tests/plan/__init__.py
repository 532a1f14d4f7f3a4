"""The plan room: the registries, the cell matrix and what makes its cells decide."""
