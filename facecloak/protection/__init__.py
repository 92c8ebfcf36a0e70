"""Changing the selected pixels: fills, the sparse cloak, the named levels, and `protect` itself."""
