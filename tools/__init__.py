"""Repository tooling (not installed): the import-contract checker."""
