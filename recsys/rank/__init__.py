"""The ranking stage: several candidate sources, pair features as of a query time, and a
LightGBM lambdarank model that re-orders their union.

sources (the config, the sources, their union, retrieval recall), features (pair
features), ranker (training windows, the ranker and its Recommender).
"""
