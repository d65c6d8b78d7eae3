"""The composition root: config assembly, ``fanz-media serve`` and the CLI.

The only part of the project that imports every package and wires them
together. The media model beside it (``engine.media``, ``engine.registry``,
``engine.codecs`` and friends) imports nothing from here or from any other
package, so ingests and outputs can depend on the model without pulling in
the whole engine.
"""
