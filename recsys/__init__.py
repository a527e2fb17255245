"""stylerec recommender stage: features, two-tower model, training, metrics, index, A/B statistics."""
