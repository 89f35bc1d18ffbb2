"""The gateway (the defend half): keys, limits and request logs in front of a served model, and
detection of extraction campaigns in those logs."""
