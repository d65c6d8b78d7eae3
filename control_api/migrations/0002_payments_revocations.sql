-- Confirmed payments and the end of access.
--
-- payment_events: every processor event accepted, keyed by processor and the
-- processor's own event id, so a replayed event is recognised and grants
-- nothing a second time. ``grant_kind``/``grant_id`` name the record the
-- event created (a subscription, an unlock or a gift), which a refund event
-- later names by the original event id.
CREATE TABLE payment_events (
    provider TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    grant_kind TEXT,
    grant_id TEXT,
    signed_at DOUBLE PRECISION NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (provider, event_id)
);

ALTER TABLE ppv_unlocks ADD COLUMN refunded_at DOUBLE PRECISION;
ALTER TABLE gift_sends ADD COLUMN refunded_at DOUBLE PRECISION;

-- A creator's block list: blocked users cannot join the creator's streams.
CREATE TABLE creator_blocks (
    creator_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (creator_id, user_id)
);

-- Playback revocations: playback tokens of ``user_id`` issued before
-- ``revoked_at`` stop opening streams in ``scope`` (a creator, a stream, or
-- every stream). Every node loads them at start and polls for new ones.
CREATE TABLE playback_revocations (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    revoked_at DOUBLE PRECISION NOT NULL,
    reason TEXT NOT NULL DEFAULT ''
);
CREATE INDEX playback_revocations_time ON playback_revocations (revoked_at);
