"""The task plugins (bench_tasks): each task's data and model, backbones, baselines, speed tasks."""
