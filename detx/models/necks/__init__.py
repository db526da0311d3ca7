"""Feature necks (FPN)."""
