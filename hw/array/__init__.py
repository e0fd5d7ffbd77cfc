"""The matrix-product engine: the MAC array, the tile engine that feeds it from the memories,
and the post-processing lanes behind it (hw/trainers/trainer/ puts them together)."""
