"""The run room: bench run end to end, adaptive seeds, Ray, injected faults, hostile input, the CLI."""
