"""Example redis-consumer plug-in: image classification (top-K labels with scores)."""
