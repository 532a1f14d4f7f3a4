"""The record room: the results store, its faults and recovery, MLflow, the cell record's schema."""
