"""The leaf: the exception tree, HTTP status names, JSON limits, text checks; imports nothing of the project."""
