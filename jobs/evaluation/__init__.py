"""The evaluate stage and the ranking metrics every other layer measures with."""
