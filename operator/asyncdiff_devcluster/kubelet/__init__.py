"""A process kubelet: runs each Pod's containers as local processes in a per-pod folder.

Why: the operator's real output is processes (torchrun workers) whose exit codes, logs and termination
messages flow back into Pod status. Images are not pulled or run: ``command``/``args`` run directly on
this machine, with the Pod's environment, volumes materialised as folders, and cluster DNS names and
ports rewritten so that several Pods (and several jobs) can share one host. See ``volumes`` and
``networking`` for the exact rewriting rules.
"""
