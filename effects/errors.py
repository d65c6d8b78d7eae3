"""The effects package's error tree.

``EffectsError`` is the base of everything raised here. Misuse by the caller
(a bad option, an unknown effect name) is kept apart from trouble with the
environment (a model file that is not installed) and with input media (a
frame in a layout no stage can work on), so that the control API can answer
a creator's typo with a 400 while an operator sees a missing model as a
deployment fault.
"""

from __future__ import annotations


class EffectsError(Exception):
    """Base of every error raised by the effects package."""


class EffectOptionError(EffectsError, ValueError):
    """An effect spec names an unknown effect or option, or a value that does
    not fit the option's type or range. The message says which and why."""


class ModelNotFoundError(EffectsError):
    """A model file that a stage needs is not installed. Models ship inside
    wheels and are never downloaded at run time, so this is a deployment
    fault: install the package the message names."""


class MediaFormatError(EffectsError, ValueError):
    """A frame or a file cannot be processed (an unsupported pixel or sample
    layout, a file without the stream asked for, a malformed LUT file)."""


class CubeParseError(MediaFormatError):
    """A ``.cube`` LUT file is malformed; the message carries the line."""
