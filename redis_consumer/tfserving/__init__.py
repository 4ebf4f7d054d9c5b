"""Lean TensorFlow Serving client (no TensorFlow import), tensor codec, tiling and dev model server."""
