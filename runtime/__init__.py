"""streamsql.runtime: topology, tasks, operators, time and windows, and the log backends."""
