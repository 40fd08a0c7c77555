"""LUT server: the FastAPI app (never imports torch)."""
