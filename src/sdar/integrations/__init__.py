"""Optional bridges to other training engines (``sdar.integrations.verl``); each needs its extra."""
