"""cffi (API mode) build of the C hot path.

The declarations come from the C headers themselves, between their
FC_CDEF_BEGIN and FC_CDEF_END markers (csrc/fc_format.h: the record and
batch layouts; csrc/flowcept.h: the API), so the ABI is written exactly once.  Set
FLOWCEPT_SANITIZE=address (or thread) to build the extension with a
sanitizer; the C test-suite has its own switch (make -C csrc SANITIZE=...).
"""
import os
import re

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CSRC = os.path.join(ROOT, "csrc")
SOURCES = ["crc32c.c", "batch.c", "spill.c", "ring.c", "capture.c", "jobid.c", "columns.c",
           "docjson.c", "ryu.c"]
CDEF_HEADERS = ["fc_format.h", "flowcept.h", "fc_columns.h", "fc_docjson.h"]   # in this order: the APIs use the formats


def read_cdef(header_path):
    """Returns the declarations of the header in the form cffi's cdef takes."""
    with open(header_path) as f:
        text = f.read()
    match = re.search(r"/\* FC_CDEF_BEGIN \*/(.*)/\* FC_CDEF_END \*/", text, re.S)
    if match is None:
        raise RuntimeError(f"{header_path}: FC_CDEF_BEGIN/END markers not found")
    body = re.sub(r"/\*.*?\*/", "", match.group(1), flags=re.S)
    lines = []
    for line in body.splitlines():
        if line.startswith("#define"):
            name, value = line.split()[1:3]
            line = f"#define {name} {value}"
        lines.append(line)
    return "\n".join(lines)


def make_builder():
    ffi = FFI()
    ffi.cdef("\n".join(read_cdef(os.path.join(CSRC, h)) for h in CDEF_HEADERS))
    flags = ["-std=c11", "-D_GNU_SOURCE", "-O2", "-Wall", "-Wextra", "-pthread"]
    link = ["-pthread", "-lm"]
    sanitize = os.environ.get("FLOWCEPT_SANITIZE", "")
    if sanitize:
        flags += [f"-fsanitize={sanitize}", "-g", "-fno-omit-frame-pointer"]
        link += [f"-fsanitize={sanitize}"]
    ffi.set_source(
        "flowcept._flowcept_c",
        '#include "flowcept.h"\n#include "fc_columns.h"\n#include "fc_docjson.h"',
        sources=[os.path.relpath(os.path.join(CSRC, s), ROOT) for s in SOURCES],
        include_dirs=[os.path.relpath(CSRC, ROOT)],
        extra_compile_args=flags,
        extra_link_args=link,
    )
    return ffi


ffibuilder = make_builder()

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
