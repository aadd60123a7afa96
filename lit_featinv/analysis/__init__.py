"""What runs show: run folders read back, what varies between a target's generations, and the report (an HTML
page and a contact sheet)."""
from ..lazy import exports

__all__, __getattr__, __dir__ = exports(__name__, {
    "reading": ["Run", "load_run", "load_generations", "load_extractor", "config_summary"],
    "diversity": ["variation", "pixel_diversity", "feature_diversity", "std_map", "region_ratios", "extremes",
                  "against_reference"],
    "report": ["Report", "build", "contact_sheet"],
    "page": ["html_page"],
    "trust": ["Reference", "load_reference"],
    "top_images": ["TopImages", "add_top_images"],
})
