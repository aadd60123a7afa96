"""A run: its targets (sources and the DataModule), images on disk, the run folder (resume, lock, metrics lines), the
writer, stop signals, and what a Python call returns."""
from ..lazy import exports

__all__, __getattr__, __dir__ = exports(__name__, {
    "data": ["TargetData", "collate"],
    "sources": ["target_items", "image_items", "feature_items", "prompt_items"],
    "images": ["load_image", "save_png", "grid"],
    "folder": ["RunFolder", "read_jsonl", "run_stats"],
    "writer": ["InversionWriter"],
    "signals": ["STOP", "StopRequested"],
    "results": ["Inversion", "inversion"],
})
