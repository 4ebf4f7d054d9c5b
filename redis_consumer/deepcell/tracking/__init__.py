"""Cell tracking (the kiosk's `caliban` job) without TensorFlow: features, assignment, tracker, .trk I/O."""
