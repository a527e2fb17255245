"""StyleMart: a synthetic marketplace whose shoppers have known visual-style tastes."""

from data.stylemart.generate import PRESETS, generate
from data.stylemart.styles import STYLE_NAMES, STYLES

__all__ = ["PRESETS", "STYLES", "STYLE_NAMES", "generate"]
