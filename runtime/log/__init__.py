"""The Log seam and its backends (see ``base``)."""
