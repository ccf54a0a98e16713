"""The statement grammar (streamsql.lark), shipped as package data."""
