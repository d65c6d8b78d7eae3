-- What the recorder says about a finished recording: whether a crash cut it
-- (closed at the engine's next start), how many segments it holds, and why
-- it ended early (a limit or a full disk; NULL when it ran to the end).
ALTER TABLE recordings ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE recordings ADD COLUMN segments INTEGER NOT NULL DEFAULT 0;
ALTER TABLE recordings ADD COLUMN stop_reason TEXT;
