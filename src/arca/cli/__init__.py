"""The ``arca`` command line: thin wrappers, one library call per command."""
