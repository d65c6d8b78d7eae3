"""JSON Schemas of request bodies and responses.

The OpenAPI document publishes these and :mod:`control_api.validation`
enforces the request ones, so both read from this single table. Times are
numbers of seconds since the Unix epoch; money is an integer number of cents.
"""

from __future__ import annotations

from typing import Any

from effects.catalog import default_catalog
from effects.options import OptionType
from engine.geo import COUNTRY_CODES

Schema = dict[str, Any]

TIME: Schema = {"type": "number", "description": "seconds since the Unix epoch"}
TIME_OR_NULL: Schema = {"type": ["number", "null"], "description": "seconds since the Unix epoch"}
ID: Schema = {"type": "string", "minLength": 1, "maxLength": 64}
CENTS: Schema = {"type": "integer", "minimum": 0, "maximum": 100_000_000}
VISIBILITY: Schema = {"type": "string", "enum": ["free", "subscribers", "pay_per_view"]}
PROTECTION: Schema = {
    "type": ["string", "null"],
    "enum": ["none", "aes-128", "sample-aes", "cbcs", "cenc", None],
    "description": "How the stream's media is encrypted (DRM); null: the engine's drm.protection setting",
}
GEO: Schema = {
    "type": ["object", "null"],
    "description": "Geographic restriction (IP-based content blocking): allow only, or block, viewers whose "
    "address maps to one of these ISO 3166-1 alpha-2 country codes; null: no restriction",
    "properties": {
        "mode": {"type": "string", "enum": ["allow", "block"]},
        "countries": {"type": "array", "items": {"type": "string", "enum": sorted(COUNTRY_CODES)}, "minItems": 1,
                      "maxItems": 250},
    },
    "required": ["mode", "countries"],
    "additionalProperties": False,
}
USERNAME: Schema = {"type": "string", "minLength": 3, "maxLength": 32, "pattern": "^[a-z0-9_]+$"}
PASSWORD: Schema = {"type": "string", "minLength": 8, "maxLength": 256}
OTP: Schema = {"type": "string", "pattern": "^[0-9]{6}$"}
CREATOR_STATUS: Schema = {"type": "string", "enum": ["active", "inactive", "warning", "suspended", "top_performer"]}
ROLE: Schema = {"type": "string", "enum": ["fan", "creator", "admin"]}
TIER: Schema = {"type": "string", "minLength": 1, "maxLength": 32}
GIFT_QUANTITY: Schema = {"type": "integer", "minimum": 1, "maximum": 1000}
GIFT_MESSAGE: Schema = {"type": "string", "maxLength": 200}
EVENTS = ["stream.started", "stream.ended", "recording.ready", "recording.stopped", "gift.sent"]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(props: dict[str, Schema], required: list[str] | None = None, closed: bool = True) -> Schema:
    """An object schema; request bodies are closed (unknown fields refused)."""
    out: Schema = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    if closed:
        out["additionalProperties"] = False
    return out


def resp(props: dict[str, Schema]) -> Schema:
    """A response object: every listed field is always present."""
    return {"type": "object", "properties": props, "required": list(props)}


def page(item: str) -> Schema:
    return resp({
        "items": {"type": "array", "items": ref(item)},
        "limit": {"type": "integer"},
        "offset": {"type": "integer"},
        "next_offset": {"type": ["integer", "null"]},
    })


PAGE_QUERY: dict[str, Schema] = {
    "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
    "offset": {"type": "integer", "minimum": 0, "maximum": 1_000_000, "default": 0},
}

# -- request bodies ----------------------------------------------------------------
REGISTER = obj(
    {
        "username": USERNAME,
        "password": PASSWORD,
        "role": {"type": "string", "enum": ["fan", "creator"]},
        "display_name": {"type": "string", "minLength": 1, "maxLength": 64},
    },
    ["username", "password", "role"],
)
LOGIN = obj({"username": USERNAME, "password": PASSWORD, "otp": OTP}, ["username", "password"])
REFRESH = obj({"refresh_token": {"type": "string", "minLength": 1, "maxLength": 256}}, ["refresh_token"])
LOGOUT = obj({"refresh_token": {"type": "string", "minLength": 1, "maxLength": 256}})
OTP_BODY = obj({"code": OTP}, ["code"])
API_KEY_BODY = obj({"name": {"type": "string", "minLength": 1, "maxLength": 64}}, ["name"])
PROFILE_PATCH = obj({
    "display_name": {"type": "string", "minLength": 1, "maxLength": 64},
    "bio": {"type": "string", "maxLength": 2000},
})
ADMIN_USER_PATCH = obj({"role": ROLE, "creator_status": CREATOR_STATUS, "verified": {"type": "boolean"}})
BAN_BODY = obj({"reason": {"type": "string", "minLength": 1, "maxLength": 500}}, ["reason"])
KICK_BODY = obj({"reason": {"type": "string", "minLength": 1, "maxLength": 500}})
RUNG: Schema = obj(
    {
        "name": {"type": "string", "minLength": 1, "maxLength": 16},
        "height": {"type": "integer", "minimum": 144, "maximum": 2160},
        "bitrate_kbps": {"type": "integer", "minimum": 100, "maximum": 20000},
    },
    ["name", "height", "bitrate_kbps"],
)
# Options that name a file on the engine's machine (a PNG, a .cube, a font)
# are for the operator's config file only: through the API they could make
# the engine read any file it can see.
_SERVER_FILE_OPTIONS = sorted(
    {o.name for info in default_catalog() for o in info.options if o.type is OptionType.PATH}
)

# A stream's effects, in the engine's settings form. Effect names are checked
# here; each effect's options are checked by the engine, which keeps the
# previous effects (and logs why) when it cannot build new ones.
EFFECT_SETTINGS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "effects": {
            "type": "array",
            "maxItems": 16,
            "items": {
                "type": "object",
                "properties": {
                    "effect": {"enum": sorted(info.name for info in default_catalog())},
                    **{name: {"enum": [""]} for name in _SERVER_FILE_OPTIONS},
                },
                "required": ["effect"],
                "maxProperties": 16,
                # Options are named like identifiers and hold plain values.
                "propertyNames": {"pattern": "^[a-z][a-z0-9_]{0,31}$"},
                "additionalProperties": {"type": ["string", "number", "boolean"], "maxLength": 256},
            },
        },
        "budget_ms": {"type": "number", "minimum": 1, "maximum": 1000},
    },
    "additionalProperties": False,
}

START_STREAM = obj(
    {
        "title": {"type": "string", "minLength": 1, "maxLength": 140},
        "visibility": VISIBILITY,
        "price_cents": CENTS,
        "recording": {"type": "boolean"},
        "ladder": {"type": "array", "items": RUNG, "maxItems": 6},
        "effects": EFFECT_SETTINGS,
        "protection": PROTECTION,
        "geo": GEO,
    },
    ["title"],
)
STOP_STREAM = obj({})
RECORD_BODY = obj({"enabled": {"type": "boolean"}}, ["enabled"])
EFFECTS_BODY = obj({"effects": EFFECT_SETTINGS}, ["effects"])
GEO_BODY = obj({"geo": GEO}, ["geo"])
GIFT_BODY = obj(
    {"sender_id": ID, "gift_id": ID, "quantity": GIFT_QUANTITY, "message": GIFT_MESSAGE},
    ["sender_id", "gift_id"],
)
SCHEDULE_BODY = obj(
    {
        "title": {"type": "string", "minLength": 1, "maxLength": 140},
        "description": {"type": "string", "maxLength": 2000},
        "starts_at": {"type": "number", "minimum": 0, "maximum": 32_503_680_000},
        "duration_minutes": {"type": "integer", "minimum": 1, "maximum": 1440},
        "visibility": VISIBILITY,
        "price_cents": CENTS,
    },
    ["title", "starts_at"],
)
SUBSCRIBE = obj({"creator_id": ID, "tier": TIER, "fan_id": ID}, ["creator_id", "fan_id"])
UNLOCK = obj({"user_id": ID}, ["user_id"])
BLOCK_BODY = obj({"user_id": ID}, ["user_id"])
PROVIDER: Schema = {"type": "string", "pattern": "^[a-z0-9_]{1,32}$"}
PAYMENT_EVENT_BODY: Schema = {
    "type": "object",
    "description": "A processor event, signed in the Payment-Signature header: "
    "t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<raw body>' under the processor's secret>.",
    "properties": {"id": {"type": "string"}, "type": {"type": "string"}, "created": {"type": "integer"},
                   "data": {"type": "object"}},
    "required": ["id", "type", "data"],
}
RECORDING_BODY = obj(
    {"id": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{2,63}$",
            "description": "the id the recorder stored it under (recordings/ID/; its VOD asset id); "
                           "default: a new one"},
     "uri": {"type": "string", "minLength": 1, "maxLength": 1000},
     "duration_s": {"type": "number", "minimum": 0, "maximum": 1e7},
     "size_bytes": {"type": "integer", "minimum": 0, "maximum": 2**53}},
    ["uri", "duration_s", "size_bytes"],
)
RECORDING_PATCH = obj({"title": {"type": "string", "minLength": 1, "maxLength": 140},
           "visibility": {"type": ["string", "null"], "enum": ["free", "subscribers", "pay_per_view", None],
                          "description": "null: as the stream was"},
           "price_cents": {"type": ["integer", "null"], "minimum": 0, "maximum": 100_000_000,
                           "description": "null: the stream's price"}})
WEBHOOK_BODY = obj(
    {"url": {"type": "string", "minLength": 8, "maxLength": 500, "pattern": "^https?://[!-~]+$"},
     "events": {"type": "array", "items": {"type": "string", "enum": EVENTS}, "maxItems": len(EVENTS)}},
    ["url"],
)
GIFT_CATALOGUE_BODY = obj(
    {"id": {"type": "string", "minLength": 1, "maxLength": 32, "pattern": "^[a-z0-9_]+$"},
     "name": {"type": "string", "minLength": 1, "maxLength": 64},
     "price_cents": {"type": "integer", "minimum": 1, "maximum": 100_000_000}},
    ["id", "name", "price_cents"],
)

# -- components (responses) ------------------------------------------------------------
_USER_FIELDS: dict[str, Schema] = {
    "id": {"type": "string"}, "username": {"type": "string"}, "display_name": {"type": "string"},
    "bio": {"type": "string"}, "role": ROLE, "verified": {"type": "boolean"}, "creator_status": CREATOR_STATUS,
    "created_at": TIME,
}
_STREAM_FIELDS: dict[str, Schema] = {
    "id": {"type": "string"}, "user_id": {"type": "string"}, "username": {"type": "string"},
    "title": {"type": "string"}, "status": {"type": "string", "enum": ["pending", "live", "ended"]},
    "playback_id": {"type": "string"}, "visibility": VISIBILITY, "price_cents": {"type": "integer"},
    "recording": {"type": "boolean"}, "ladder": {"type": "array"}, "effects": {"type": "object"},
    "viewers": {"type": "integer"}, "peak_viewers": {"type": "integer"}, "total_views": {"type": "integer"},
    "created_at": TIME, "started_at": TIME_OR_NULL, "ended_at": TIME_OR_NULL,
    "ended_reason": {"type": ["string", "null"]}, "protection": PROTECTION, "geo": GEO,
}
_GIFT_SEND: dict[str, Schema] = {
    "id": {"type": "string"}, "stream_id": {"type": "string"}, "sender_id": {"type": "string"},
    "username": {"type": "string"}, "gift_id": {"type": "string"}, "quantity": {"type": "integer"},
    "amount_cents": {"type": "integer"}, "message": {"type": "string"}, "created_at": TIME,
}

COMPONENTS: dict[str, Schema] = {
    "Problem": {
        "type": "object",
        "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                       "detail": {"type": "string"}, "instance": {"type": "string"},
                       "errors": {"type": "array", "items": {"type": "object"}}},
        "required": ["type", "title", "status", "detail"],
    },
    "User": resp(_USER_FIELDS),
    "Me": resp({**_USER_FIELDS, "banned": {"type": "boolean"}, "totp_enabled": {"type": "boolean"}}),
    "TokenPair": resp({"access_token": {"type": "string"}, "refresh_token": {"type": "string"},
                       "token_type": {"type": "string", "enum": ["Bearer"]}, "expires_in": {"type": "integer"},
                       "user": ref("Me")}),
    "TotpSetup": resp({"secret": {"type": "string"}, "otpauth_uri": {"type": "string"}}),
    "TotpState": resp({"totp_enabled": {"type": "boolean"}}),
    "ApiKey": resp({"id": {"type": "string"}, "name": {"type": "string"}, "created_at": TIME,
                    "revoked_at": TIME_OR_NULL, "last_used_at": TIME_OR_NULL,
                    "key": {"type": ["string", "null"], "description": "shown once, at creation"}}),
    "LiveStream": resp(_STREAM_FIELDS),
    "StreamStatus": resp({"live": {"type": "boolean"}, "stream": {"anyOf": [ref("LiveStream"), {"type": "null"}]}}),
    "StreamKey": resp({"id": {"type": "string"}, "created_at": TIME, "rtmp_app": {"type": "string"},
                       "stream_key": {"type": ["string", "null"], "description": "shown once"},
                       "key_hint": {"type": "string"}}),
    "Viewer": resp({"user_id": {"type": "string"}, "username": {"type": "string"}, "joined_at": TIME}),
    "Viewers": resp({"stream_id": {"type": "string"}, "concurrent": {"type": "integer"},
                     "peak": {"type": "integer"}, "total_views": {"type": "integer"},
                     "items": {"type": "array", "items": ref("Viewer")}, "limit": {"type": "integer"},
                     "offset": {"type": "integer"}, "next_offset": {"type": ["integer", "null"]}}),
    "Join": resp({"playback_url": {"type": "string"}, "token": {"type": ["string", "null"]},
                  "expires_at": {"type": "integer"}, "viewer_session_id": {"type": "string"},
                  "stream": ref("LiveStream")}),
    "Leave": resp({"stream_id": {"type": "string"}, "left": {"type": "boolean"}, "concurrent": {"type": "integer"}}),
    "Gift": resp({"id": {"type": "string"}, "name": {"type": "string"}, "price_cents": {"type": "integer"},
                  "active": {"type": "boolean"}}),
    "GiftSend": resp(_GIFT_SEND),
    "Leaderboard": resp({
        "stream_id": {"type": "string"}, "total_cents": {"type": "integer"},
        "leaderboard": {"type": "array", "items": resp({"user_id": {"type": "string"}, "username": {"type": "string"},
                                                         "total_cents": {"type": "integer"},
                                                         "gifts": {"type": "integer"}})},
        "recent": {"type": "array", "items": ref("GiftSend")},
    }),
    "Schedule": resp({"id": {"type": "string"}, "user_id": {"type": "string"}, "username": {"type": "string"},
                      "title": {"type": "string"}, "description": {"type": "string"}, "starts_at": TIME,
                      "duration_minutes": {"type": "integer"}, "visibility": VISIBILITY,
                      "price_cents": {"type": "integer"}, "created_at": TIME}),
    "Subscription": resp({"id": {"type": "string"}, "fan_id": {"type": "string"}, "creator_id": {"type": "string"},
                          "tier": {"type": "string"}, "status": {"type": "string", "enum": ["active", "cancelled"]},
                          "current_period_end": TIME, "created_at": TIME, "cancelled_at": TIME_OR_NULL}),
    "Unlock": resp({"id": {"type": "string"}, "stream_id": {"type": "string"}, "user_id": {"type": "string"},
                    "amount_cents": {"type": "integer"}, "created_at": TIME,
                    "refunded_at": TIME_OR_NULL}),
    "Recording": resp({"id": {"type": "string"}, "stream_id": {"type": "string"}, "uri": {"type": "string"},
                       "duration_s": {"type": "number"}, "size_bytes": {"type": "integer"}, "created_at": TIME,
                       "interrupted": {"type": "boolean"}, "segments": {"type": "integer"},
                       "stop_reason": {"type": ["string", "null"]}}),
    "VodAsset": resp({"id": {"type": "string", "description": "the asset id: /vod/ID/"},
                      "stream_id": {"type": "string"}, "user_id": {"type": "string"}, "title": {"type": "string"},
                      "visibility": VISIBILITY, "price_cents": {"type": "integer"}, "duration_s": {"type": "number"},
                      "size_bytes": {"type": "integer"}, "created_at": TIME, "playlist": {"type": "string"},
                      "download": {"type": "string"}, "poster": {"type": "string"}}),
    "Watch": resp({"playback_url": {"type": "string"}, "token": {"type": "string"}, "expires_at": {"type": "integer"},
                   "asset": ref("VodAsset")}),
    "Webhook": resp({"id": {"type": "string"}, "url": {"type": "string"},
                     "events": {"type": "array", "items": {"type": "string"}}, "active": {"type": "boolean"},
                     "created_at": TIME,
                     "secret": {"type": ["string", "null"], "description": "shown once, at creation"}}),
    "Delivery": resp({"id": {"type": "string"}, "endpoint_id": {"type": "string"}, "event": {"type": "string"},
                      "status": {"type": "string", "enum": ["pending", "delivered", "failed"]},
                      "attempts": {"type": "integer"}, "last_status": {"type": ["integer", "null"]},
                      "last_error": {"type": ["string", "null"]}, "next_attempt_at": TIME_OR_NULL,
                      "created_at": TIME, "delivered_at": TIME_OR_NULL}),
    "Audit": resp({"id": {"type": "string"}, "actor_kind": {"type": "string"}, "actor_id": {"type": ["string", "null"]},
                   "action": {"type": "string"}, "target_kind": {"type": "string"},
                   "target_id": {"type": ["string", "null"]}, "detail": {"type": "object"},
                   "remote": {"type": "string"}, "created_at": TIME}),
    "Block": resp({"creator_id": {"type": "string"}, "user_id": {"type": "string"}, "username": {"type": "string"},
                   "created_at": TIME}),
    "PaymentReceipt": resp({"event_id": {"type": "string"}, "type": {"type": "string"},
                            "status": {"type": "string", "enum": ["recorded", "duplicate", "ignored"]},
                            "grant_kind": {"type": ["string", "null"]}, "grant_id": {"type": ["string", "null"]}}),
    "Kicked": resp({"stream_id": {"type": ["string", "null"]}, "disconnected": {"type": "boolean"}}),
}

for _name in ("User", "LiveStream", "Schedule", "Subscription", "Unlock", "Recording", "VodAsset", "Webhook",
              "Delivery",
              "Audit", "ApiKey", "Gift", "Block"):
    COMPONENTS[f"{_name}Page"] = page(_name)
