"""VOD assets: finished recordings and transcoded files kept in storage,
served as HLS (and DASH), as one MP4 download and with a poster frame."""
