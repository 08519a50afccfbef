"""The numeric contract between frameworks: the spec, the NumPy reference, losses, weight files, the synthesis rule, comparisons."""
