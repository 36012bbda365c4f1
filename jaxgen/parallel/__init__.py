"""Parallelism, the bottom layer: the device mesh (mesh.py), shardings from logical
axis names (specs.py) and the constraints on activations (activations.py).

Nothing here imports the rest of jaxgen (only jaxgen.errors): the models, the
train step, the config checks and `jaxgen plan` all depend on this package, and
it on none of them.
"""
