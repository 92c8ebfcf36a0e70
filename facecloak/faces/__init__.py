"""Faces in a photo: detection (MTCNN), five-point alignment into model templates, parsing into regions."""
