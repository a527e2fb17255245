"""Frozen features for the two-tower model, computed once per dataset and split.

Items are rows of a fixed catalogue order (sorted item ids). Users are rows of sorted
user ids. Behaviour features are *time-aware*: a query "user u at time t" sees only the
events and reviews before t — the last ``history_len`` events (weighted by event type and
recency), the style profile those imply, and the mean text vector of the user's own
reviews. Training examples are the first interaction of each (user, item) pair in the
training fold, so the target is never in its own history.

One module per job: config (FeatureConfig, event codes), items (the item table), events
(the event log and its time-aware queries), truth (relevance on a fold), interactions
(the baselines' matrix), featureset (the FeatureSet) and builder (build_features).
"""

from recsys.features.builder import build_features
from recsys.features.config import DAY, EVENT_CODES, FEATURES_DIR, FeatureConfig, event_code
from recsys.features.events import Examples, UserBatch
from recsys.features.featureset import FeatureSet
from recsys.features.items import ItemEncoders, ItemTable

__all__ = [
    "DAY", "EVENT_CODES", "FEATURES_DIR", "Examples", "FeatureConfig", "FeatureSet", "ItemEncoders", "ItemTable", "UserBatch", "build_features", "event_code",
]
