"""Live and file transcoding: decode once, scale once per rung, encode each rung.

Entry points: :class:`transcode.live.LiveTranscoder` (a registry stream in,
each rendition published back as ``f"{source}/{rung}"``),
:func:`transcode.file.transcode_file` (a file in, rendition events out),
:func:`transcode.encoders.probe_encoders` (once at start-up) and the ladder
configuration in :mod:`transcode.ladder`.
"""
