"""Test runners: ksql-test-runner compatible and QTT case files."""
