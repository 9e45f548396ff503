"""Candidate sources: each scores every catalog item for one user, learns one event at a time."""

from models.sources.base import Catalog, Source, UserHistory
from models.sources.bpr import OnlineBPR
from models.sources.content import ContentSimilarity
from models.sources.item_item import ItemItemCosine
from models.sources.popularity import DecayedPopularity, Popularity, RandomScores

__all__ = [
    "Catalog",
    "ContentSimilarity",
    "DecayedPopularity",
    "ItemItemCosine",
    "OnlineBPR",
    "Popularity",
    "RandomScores",
    "Source",
    "UserHistory",
]
