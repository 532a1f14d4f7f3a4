"""The fit room: the fit loop, DDP, tuning (SQLite and PostgreSQL storage), reused fits, the GPU."""
