"""Detectors composed from backbones, necks and heads; the contract and the table from
`model.name` to builder are in detx.models.base."""
