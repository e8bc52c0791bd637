"""The operators' web dashboard: queues, jobs, studies with overlays, failures with retry."""
