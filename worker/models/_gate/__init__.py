"""Quality-gate code the volume models share (per-slice area profiles)."""
