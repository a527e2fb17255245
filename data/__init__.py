"""stylerec data layer: canonical tables, validation with quarantine, splits, StyleMart, adapters."""
