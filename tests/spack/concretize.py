"""Run by real Spack (``spack python concretize.py OUT SPEC...``), not by pytest: concretizes each
SPEC in this one process, so the package classes are loaded once for all of them, and writes
what the tests check to OUT (JSON).

A SPEC starting with ``!`` is expected not to concretize: its error is recorded.  ``?SPEC``
records what the recipe's ``mofka_python_problem`` says of the abstract SPEC (no solve).
"""
import json
import sys
import time

import spack.concretize
import spack.error
import spack.repo
import spack.spec


def node(s):
    return {"version": str(s.version), "namespace": s.namespace, "external": s.external,
            "variants": {k: str(v.value) for k, v in s.variants.items()}}


def mpi_provider(spec):
    try:
        return spec["mpi"].name
    except KeyError:
        return None


def concretize(text):
    wall, cpu = time.time(), time.process_time()
    out = {"spec": text}
    try:
        spec = spack.concretize.concretize_one(spack.spec.Spec(text))
    except spack.error.SpackError as e:
        out.update(ok=False, error=str(e))
    else:
        out.update(ok=True, root=spec.format("{name}@{version}{variants}"),
                   nodes={s.name: node(s) for s in spec.traverse()},
                   mpi=mpi_provider(spec))
    out.update(wall_s=round(time.time() - wall, 1), cpu_s=round(time.process_time() - cpu, 1))
    return out


def mofka_python_problem(text):
    cls = spack.repo.PATH.get_pkg_class("py-flowcept")
    check = sys.modules[cls.__module__].mofka_python_problem
    return {"spec": text, "problem": check(spack.spec.Spec(text))}


def main(out, specs):
    results = []
    for text in specs:
        if text.startswith("?"):
            results.append(mofka_python_problem(text[1:]))
        else:
            results.append(concretize(text.lstrip("!")))
        print(json.dumps({k: v for k, v in results[-1].items() if k != "nodes"}), flush=True)
    with open(out, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
