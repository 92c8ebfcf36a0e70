"""Is a photo still recognised? Independent recognisers, thresholds, ROC, the verdict panel."""
