"""Ground floor: leaf modules that import nothing of ours (image I/O, split I/O, hashing, metrics, params)."""
