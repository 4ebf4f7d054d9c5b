"""Protocol buffer messages wire-compatible with TensorFlow Serving (generated, committed)."""
