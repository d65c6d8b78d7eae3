"""WebRTC: go live from a browser (WHIP, RFC 9725) and watch in well under a
second (WHEP).

The HTTP face is :class:`webrtc.http.WebRtcHttp` (routes, limits, reaping);
below it, one module per job:

* ``whip``: a publisher's peer connection writing a registry stream. H.264
  stays as it came (AVCC packets, ``avcC`` built from in-band SPS/PPS, see
  ``h264``); VP8 is transcoded once to H.264 (``transcode``'s decoder and
  rung encoder, libx264 ``ultrafast``, ``zerolatency``) because HLS carries
  no VP8; Opus becomes AAC once, because
  the HLS packager carries AAC only. So HLS, the ladder, recording and
  effects see a WHIP stream exactly like an RTMP one.
* ``hub``: one registry subscription per watched stream, shared by all its
  WHEP viewers, with the current group of pictures in the registry's
  ``GopCache`` for viewers who join. H.264 without B-frames is relayed without re-encoding; a
  source with B-frames (or another codec) is re-encoded once per stream; AAC
  is converted to Opus once per stream, and only while viewers exist.
* ``feed``: each viewer's bounded queues: a slow viewer drops to the next
  keyframe and never stalls the others.
* ``whep``: a viewer's peer connection; its tracks hand aiortc encoded
  packets, which it only packetises.
* ``sessions``: the sans-I/O resource table (limits, idle reaping).
* ``sdp``: applying an offer and making the answer, shared by WHIP and WHEP
  (which do not import each other); the peer's bad SDP is an ``OfferError``.
* ``tap``, ``ice``, ``negotiate``, ``transcode``: aiortc and PyAV glue.
  ``tap`` and ``ice`` use parts of aiortc and aioice that are not public API;
  their ``check_library`` runs when :class:`~webrtc.http.WebRtcHttp` starts.

Nothing reaches outside the machine by default: no ICE servers unless
configured (aiortc's public STUN default is never used), and the pages load
only the engine's own files (hls.js is vendored under ``static/``).
"""
