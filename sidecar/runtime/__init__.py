"""Runtime: when each container is probed, what the results add up to, and how the pod drains.

    settings   RunSettings: every `run` setting, its default and its validation
    scheduler  one ContainerScheduler per container; AggressivePolicy; the shared Ticker
    state      AggregateState: the kubelet's thresholds, the aggregate, change notification
    drain      Drainer: SIGTERM -> not ready -> drained
    attempt    one guarded attempt: what schedulers, `check` and /live run

Runtime imports `probes` and the shared leaves only; the servers (`sidecar.serve`) read
the state it keeps, and it never reads them.
"""
