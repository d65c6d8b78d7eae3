-- A stream's geographic rule ("IP-based content blocking"): NULL geo_mode
-- is no rule; otherwise viewers are allowed only from, or blocked from, the
-- countries in geo_countries (a JSON array of ISO 3166-1 alpha-2 codes).
-- The playback check applies it to playlists, segments, keys and WHEP.
ALTER TABLE live_streams ADD COLUMN geo_mode TEXT
    CHECK (geo_mode IS NULL OR geo_mode IN ('allow', 'block'));
ALTER TABLE live_streams ADD COLUMN geo_countries TEXT NOT NULL DEFAULT '[]';
