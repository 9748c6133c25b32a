"""Using a trained detector: the one scoring module, predict, the HTTP service, export."""
