"""Photos on disk: reading and writing (formats, metadata, atomic outputs), labelled sets, bundled photos."""
