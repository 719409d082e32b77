"""Machine-readable reason codes carried by every decision, journal entry and sorter reply.

The numeric values travel on the wire (u16 in the sorter reply) and into the audit log, so
they are part of the interface: never renumber one, only add new codes.
"""

from enum import IntEnum


class Reason(IntEnum):
    """Why a parcel went where it went."""

    # release (1xx)
    LOW_RISK_CLEAN_XRAY = 100
    OFFICER_CLEARED = 101

    # inspection (2xx)
    RISK_MISSING = 200
    RISK_RED = 201
    RISK_YELLOW_UNREVIEWED = 202
    RISK_SCORE_HIGH = 203
    XRAY_ALARM = 210
    XRAY_AMBIGUOUS_UNREVIEWED = 211
    XRAY_MISSING = 212
    XRAY_FAILED = 213
    XRAY_LATE = 214
    XRAY_BAD_IMAGE = 215
    DECLARATION_MISMATCH = 220
    OFFICER_HOLD = 230
    OFFICER_REVIEW_INSPECT = 231
    RANDOM_AUDIT = 240

    # exception (3xx)
    NO_READ = 300
    LAP_LIMIT = 301
    LOST_TRACKING = 302
    LANE_UNAVAILABLE = 303
    MALFORMED_TELEGRAM = 304
    OPERATOR_CLOSED = 305  # an operator closed the parcel (found off the belt, damaged, ...)

    # sorter outcomes and misses recorded in the journal (4xx)
    DEADLINE_MISSED = 400
    DIVERT_MISSED = 401
    LANE_FULL = 402
    PLC_DEFAULTED = 403
    ILLEGAL_TRANSITION = 404
    # why a parcel closed as lost tracking (beside LOST_TRACKING) when the PLC did not say so
    CONFIRMATION_TIMEOUT = 405  # no telegram for it within the line's confirm_timeout_s
    TRACKING_ID_REUSED = 406  # a new destination request came with its tracking id
