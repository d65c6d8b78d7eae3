-- Recordings are VOD assets: a title of their own, and a visibility and
-- price that, when set, replace the stream's (NULL: as the stream was).
ALTER TABLE recordings ADD COLUMN title TEXT;
ALTER TABLE recordings ADD COLUMN visibility TEXT
    CHECK (visibility IS NULL OR visibility IN ('free', 'subscribers', 'pay_per_view'));
ALTER TABLE recordings ADD COLUMN price_cents INTEGER CHECK (price_cents IS NULL OR price_cents >= 0);
