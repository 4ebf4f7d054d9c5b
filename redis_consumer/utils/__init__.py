"""Small helpers shared by consumers: image I/O, safe zip handling, tiling, timestamps."""
