"""Tasks for `bench`: backbones that take any attention variant, and (soon) the task plug-ins."""
