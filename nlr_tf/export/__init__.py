"""Export: SavedModels for TF Serving."""
