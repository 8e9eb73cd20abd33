"""The emulated kube-apiserver: storage, admission, discovery and the HTTP surface.

Why a package of its own: everything a client can observe about Kubernetes semantics (codes, resource
versions, watch streams, schema validation) lives here, and the controllers and kubelet talk to it through
the same ``Api`` object as HTTP clients do, so they cannot bypass those semantics.
"""
