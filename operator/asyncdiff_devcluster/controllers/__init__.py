"""Controllers that turn stored objects into work, like kube-controller-manager and kube-scheduler.

Why: an operator that creates Jobs, Services and owned objects is only testable if something creates
the Pods, garbage-collects the children and publishes Endpoints. Each controller is one small module
that watches the ``Store`` in-process and writes back through ``Api``.
"""
