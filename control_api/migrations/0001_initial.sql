-- The platform's media-facing records. Portable SQL for SQLite and PostgreSQL:
-- TEXT ids, INTEGER 0/1 flags, DOUBLE PRECISION times (seconds since the epoch),
-- INTEGER amounts in cents.

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('fan', 'creator', 'admin')),
    display_name TEXT NOT NULL,
    bio TEXT NOT NULL DEFAULT '',
    verified INTEGER NOT NULL DEFAULT 0,
    creator_status TEXT NOT NULL DEFAULT 'active'
        CHECK (creator_status IN ('active', 'inactive', 'warning', 'suspended', 'top_performer')),
    banned INTEGER NOT NULL DEFAULT 0,
    banned_reason TEXT,
    totp_secret TEXT,
    totp_enabled INTEGER NOT NULL DEFAULT 0,
    totp_last_step BIGINT NOT NULL DEFAULT 0,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    refresh_hash TEXT NOT NULL UNIQUE,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION,
    remote TEXT NOT NULL DEFAULT ''
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    created_by TEXT REFERENCES users (id) ON DELETE SET NULL,
    created_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION,
    last_used_at DOUBLE PRECISION
);

CREATE TABLE stream_keys (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key_hash TEXT NOT NULL UNIQUE,
    key_hint TEXT NOT NULL DEFAULT '',
    created_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION
);
CREATE INDEX stream_keys_user ON stream_keys (user_id);

CREATE TABLE live_streams (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'live', 'ended')),
    playback_id TEXT NOT NULL UNIQUE,
    visibility TEXT NOT NULL CHECK (visibility IN ('free', 'subscribers', 'pay_per_view')),
    price_cents INTEGER NOT NULL DEFAULT 0,
    recording INTEGER NOT NULL DEFAULT 0,
    ladder TEXT NOT NULL DEFAULT '[]',
    effects TEXT NOT NULL DEFAULT '{}',
    peak_viewers INTEGER NOT NULL DEFAULT 0,
    total_views INTEGER NOT NULL DEFAULT 0,
    created_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    ended_at DOUBLE PRECISION,
    ended_reason TEXT
);
CREATE INDEX live_streams_status ON live_streams (status, started_at);
CREATE INDEX live_streams_user ON live_streams (user_id, status);

CREATE TABLE stream_schedules (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    starts_at DOUBLE PRECISION NOT NULL,
    duration_minutes INTEGER NOT NULL,
    visibility TEXT NOT NULL CHECK (visibility IN ('free', 'subscribers', 'pay_per_view')),
    price_cents INTEGER NOT NULL DEFAULT 0,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX stream_schedules_start ON stream_schedules (starts_at);

CREATE TABLE viewers (
    id TEXT PRIMARY KEY,
    stream_id TEXT NOT NULL REFERENCES live_streams (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    joined_at DOUBLE PRECISION NOT NULL,
    left_at DOUBLE PRECISION,
    remote TEXT NOT NULL DEFAULT ''
);
CREATE INDEX viewers_stream ON viewers (stream_id, left_at);
CREATE INDEX viewers_user ON viewers (user_id, stream_id);

CREATE TABLE gifts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    price_cents INTEGER NOT NULL CHECK (price_cents > 0),
    active INTEGER NOT NULL DEFAULT 1
);
INSERT INTO gifts (id, name, price_cents, active) VALUES ('rose', 'Rose', 100, 1);
INSERT INTO gifts (id, name, price_cents, active) VALUES ('heart', 'Heart', 500, 1);
INSERT INTO gifts (id, name, price_cents, active) VALUES ('diamond', 'Diamond', 2000, 1);
INSERT INTO gifts (id, name, price_cents, active) VALUES ('crown', 'Crown', 10000, 1);

CREATE TABLE gift_sends (
    id TEXT PRIMARY KEY,
    stream_id TEXT NOT NULL REFERENCES live_streams (id) ON DELETE CASCADE,
    sender_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    gift_id TEXT NOT NULL REFERENCES gifts (id),
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    amount_cents INTEGER NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX gift_sends_stream ON gift_sends (stream_id, sender_id);

CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY,
    fan_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    creator_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tier TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'cancelled')),
    current_period_end DOUBLE PRECISION NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    cancelled_at DOUBLE PRECISION
);
CREATE INDEX subscriptions_pair ON subscriptions (fan_id, creator_id, status);

CREATE TABLE ppv_unlocks (
    id TEXT PRIMARY KEY,
    stream_id TEXT NOT NULL REFERENCES live_streams (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    amount_cents INTEGER NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    UNIQUE (stream_id, user_id)
);

CREATE TABLE recordings (
    id TEXT PRIMARY KEY,
    stream_id TEXT NOT NULL REFERENCES live_streams (id) ON DELETE CASCADE,
    uri TEXT NOT NULL,
    duration_s DOUBLE PRECISION NOT NULL,
    size_bytes BIGINT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX recordings_stream ON recordings (stream_id);

CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    actor_kind TEXT NOT NULL,
    actor_id TEXT,
    action TEXT NOT NULL,
    target_kind TEXT NOT NULL,
    target_id TEXT,
    detail TEXT NOT NULL DEFAULT '{}',
    remote TEXT NOT NULL DEFAULT '',
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX audit_log_time ON audit_log (created_at);

CREATE TABLE webhook_endpoints (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    events TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1,
    created_by TEXT REFERENCES users (id) ON DELETE SET NULL,
    created_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_status INTEGER,
    last_error TEXT,
    next_attempt_at DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL,
    delivered_at DOUBLE PRECISION
);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (status, next_attempt_at);
