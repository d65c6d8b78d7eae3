-- A stream's own encryption scheme (DRM): NULL follows the engine's
-- drm.protection setting; otherwise one of the schemes the engine writes.
-- The publish check hands it to the engine with the grant.
ALTER TABLE live_streams ADD COLUMN protection TEXT
    CHECK (protection IS NULL OR protection IN ('none', 'aes-128', 'sample-aes', 'cbcs', 'cenc'));
