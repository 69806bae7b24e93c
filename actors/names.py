"""Names of the cluster-wide singleton actors (the session resources are named in core.ids)."""
SCHEDULER = "avatar-scheduler"
RATE_LIMITER = "avatar-rate-limiter"
WEBHOOKS = "avatar-webhooks"
