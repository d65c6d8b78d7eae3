"""Recording: a stream's renditions kept as a VOD recording in storage.

The recorder re-uses the CMAF (or TS) segments the HLS packager already
writes: no second encode, no second mux. Each segment is spooled to storage
through :class:`cluster.storage.SpooledUploader` and noted in a local
journal (appended and fsynced per segment), from which the recording's
playlists are rebuilt after a crash. See :mod:`packager.recording.recorder`
for the life of one recording and :mod:`packager.recording.journal` for the
journal format.
"""
