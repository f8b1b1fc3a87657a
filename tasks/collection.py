"""The invoke namespace: one collection per module of this package, plus the top-level demo."""

from invoke import Collection

from tasks import analysis, bench, data, demo, docker, ml, search, tests, visualize

ns = Collection()
for module in (analysis, bench, data, docker, ml, search, tests, visualize):
    ns.add_collection(Collection.from_module(module), name=module.__name__.rsplit(".", 1)[-1])
ns.add_task(demo.demo)
