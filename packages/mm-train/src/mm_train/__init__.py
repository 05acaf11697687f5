"""mm-train: A small typed training library: dataclass configs and CLI, fit loop, AdamW groups and schedules, atomic checkpoints with exact resume, logging, DDP."""

__version__ = "0.1.0"
