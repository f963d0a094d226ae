"""Adaptation methods, one file each, registered by name (`selfsup.adapt.registry`); the contract is in
`base.py`. Method modules never import one another: what two share lives in `selfsup.adapt.shared`."""
