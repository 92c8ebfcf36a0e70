"""The one masking stage: LEAM maps of aligned faces -> the pixels of each face to change."""
