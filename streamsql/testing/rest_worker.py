"""Imported by the fork server of the REST case runner's worker pool (``rest.run_cases``):
loads and builds what every case needs once, so each worker forked from it starts ready."""
from streamsql.testing.rest import preload

preload()
