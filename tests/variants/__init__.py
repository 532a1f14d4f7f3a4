"""The variant plugins (bench_variants): the contract, the study's grid, KV caches."""
