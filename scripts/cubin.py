"""Shared by the static kernel tools (sass_lines.py, ptxas_usage.py): running a tool, and compiling
one .cu file of this repository to a cubin with the project's device flags, no GPU needed."""
import os
import subprocess
import sys


def run(cmd, **kw):
    """The finished process; exits with the tool's stderr when it fails."""
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd[:3])} ...: exit {r.returncode}\n{r.stderr[-4000:]}")
    return r


def compile_cubin(nvcc, root, source, arch, cubin, extra=()):
    """nvcc -cubin of `source` with root's include/ and src/ on the path; the process (its stdout
    and stderr hold what `extra` flags such as -Xptxas -v print)."""
    a = arch.replace("sm_", "")
    return run([nvcc, "-I", os.path.join(root, "include"), "-I", os.path.join(root, "src"),
                "-lineinfo", "--expt-relaxed-constexpr", "-O3", "-DNDEBUG", "-std=c++20", "-cubin",
                f"-gencode=arch=compute_{a},code=sm_{a}", *extra, source, "-o", cubin])
