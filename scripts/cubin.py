"""Shared by the static kernel tools (sass_lines.py, ptxas_usage.py, ncu_sass_lines.py): running a
tool, their toolkit options, compiling one .cu file of this repository to a cubin with the
project's device flags (no GPU needed), and a disassembly's functions with demangled names."""
import os
import re
import shutil
import subprocess
import sys

# The repository these tools sit in (scripts/..).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def add_toolkit_args(ap, nvdisasm=True):
    """--arch, --nvcc (and --nvdisasm) on an argparse parser."""
    ap.add_argument("--arch", default="sm_90a")
    ap.add_argument("--nvcc", default=shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc")
    if nvdisasm:
        ap.add_argument("--nvdisasm", default=shutil.which("nvdisasm") or "/usr/local/cuda/bin/nvdisasm")


def cubin_for(args, source, tmp, given=None):
    """`given` when set, else `source` compiled (against ROOT) into the folder `tmp`."""
    if given:
        return given
    cubin = os.path.join(tmp, "k.cubin")
    compile_cubin(args.nvcc, ROOT, source, args.arch, cubin)
    return cubin


def functions(nvdisasm, cubin, *flags):
    """{mangled name: (demangled name, [lines of its listing])} of `nvdisasm -c FLAGS cubin`."""
    out, cur = {}, None
    for ln in run([nvdisasm, "-c", *flags, cubin]).stdout.split("\n"):
        m = re.match(r"\s*\.text\.(\S+):", ln)
        if m:
            cur = m.group(1)
            out[cur] = []
        elif cur:
            out[cur].append(ln)
    names = run(["c++filt"], input="\n".join(out)).stdout.split("\n")
    return {f: (d, lines) for (f, lines), d in zip(out.items(), names)}


def instructions(listing):
    """[(opcode with its modifiers, (file, line))] of one function's listing (nvdisasm -g or -gi),
    each instruction on the innermost source line it came from."""
    out, where, after_inlined = [], ("?", 0), False
    for ln in listing:
        m = re.search(r'//## File "([^"]*)", line (\d+)( inlined at)?', ln)
        if m:
            # -gi prints an inlined location, then the call site's bare one: keep the first.
            if not (after_inlined and not m.group(3)):
                where = (os.path.basename(m.group(1)), int(m.group(2)))
            after_inlined = bool(m.group(3))
            continue
        m = re.match(r"\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", ln)
        if m:
            out.append((m.group(1), where))
            after_inlined = False
    return out
