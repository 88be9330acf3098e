"""One module per command. Each is a typed function that returns data for ``render``; no click."""
