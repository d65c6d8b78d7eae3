"""Live effects: stages between decode and the transcode ladder.

Build an :class:`~effects.chain.EffectChain` from effect specs
(``"watermark:text=FANZ,position=bottom-right"`` or the JSON form), run its
``process_video`` / ``process_audio`` off the event loop for each decoded
frame, call ``update`` to change effects while live, and read ``stats`` for
metrics. ``fanz-media effects`` (:func:`effects.cli.main`) lists the
effects and applies them to files.
"""

from effects.chain import EffectChain, StageStats
from effects.errors import EffectOptionError, EffectsError, MediaFormatError, ModelNotFoundError
from effects.models import ModelStore
from effects.options import EffectSpec
from effects.registry import EffectRegistry, default_registry

__all__ = [
    "EffectChain",
    "EffectOptionError",
    "EffectRegistry",
    "EffectSpec",
    "EffectsError",
    "MediaFormatError",
    "ModelNotFoundError",
    "ModelStore",
    "StageStats",
    "default_registry",
]
