"""How long clusterctl waits, in one place: the defaults of every timeout and grace period (seconds)."""

WORKER_TIMEOUT = 60.0  # `up`, `add-worker`: until every worker registers (--timeout)
DOWN_GRACE = 10.0  # `down`, `remove-worker`: between SIGTERM and SIGKILL (--grace)
RESTART_GRACE = 5.0  # `up` stopping a changed process, or undoing a failed start
LOST_WORKER_GRACE = 20.0  # `up`: how long a live but unregistered worker may take to (re)appear before restart
