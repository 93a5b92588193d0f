"""llama.cpp built the way modelyard runs it: one source, one set of CPU flags, chosen on purpose.

llama-cpp-python's wheel (the llama-cpp backend) and llama.cpp's own programs (``ggml-rpc-server``
for models spread over machines; ``llama-server``, ``llama-bench`` and ``llama-batched-bench``,
the benchmarks' anchors) are compiled from the same llama-cpp-python source package, which
vendors llama.cpp, with the same CMake arguments. So an RPC server always speaks the backend's
protocol version, and a benchmark compares modelyard with a llama.cpp built exactly like its own.

Why explicit CPU flags rather than ``GGML_NATIVE`` (what a plain ``pip install`` uses): on an Intel
Xeon with AMX a native build compiles ggml's AMX kernels, and the first decode of a Q4_K_M model
segfaults inside ``ggml_backend_amx_mul_mat`` (llama.cpp issue #20824). So on x86-64 each
instruction set ggml has a switch for is turned on when this CPU has it (AVX2 and AVX-512 with
their extensions: prompt processing ran 1.45x faster with AVX-512 than with AVX2 alone, README
"Building llama.cpp"), and AMX is always off. The flags, and so the cache key below, follow the
CPU: a machine with other instructions builds its own wheel rather than dying of SIGILL in a
wheel built for another. Other architectures keep ggml's native build (AMX is x86's alone).

``GGML_RPC`` is on: ``grpc_servers`` (LocalAI's name) spread a model's layers over llama.cpp RPC
servers, which needs the RPC backend in the library.

Builds are cached under ``~/.cache/modelyard/llama-cpp/<version>-<hash of the arguments>``, never in
pip's wheel cache, so a wheel built with other flags is never picked up by mistake.

    python -m modelyard.launcher.llama_build cmake-args       # what CMAKE_ARGS is set to
    python -m modelyard.launcher.llama_build install          # the wheel, into this environment
    python -m modelyard.launcher.llama_build programs DEST ggml-rpc-server [llama-server ...]
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

LLAMA_CPP_PYTHON_VERSION = "0.3.36"

# ggml's switch for each x86 instruction set it has kernels for, and the /proc/cpuinfo flags that
# switch needs (GGML_AVX512 compiles for AVX-512 F, CD, VL, DQ and BW together).
X86_SWITCHES = (
    ("GGML_SSE42", ("sse4_2",)),
    ("GGML_AVX", ("avx",)),
    ("GGML_AVX2", ("avx2",)),
    ("GGML_FMA", ("fma",)),
    ("GGML_F16C", ("f16c",)),
    ("GGML_BMI2", ("bmi2",)),
    ("GGML_AVX_VNNI", ("avx_vnni",)),
    ("GGML_AVX512", ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw")),
    ("GGML_AVX512_VBMI", ("avx512vbmi",)),
    ("GGML_AVX512_VNNI", ("avx512_vnni",)),
    ("GGML_AVX512_BF16", ("avx512_bf16",)),
)
NEVER = ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")  # llama.cpp #20824


def cpu_flags(machine: str, cpu_features: set[str]) -> tuple[str, ...]:
    """ggml's CPU switches for a CPU of architecture ``machine`` (``platform.machine()``) with
    ``cpu_features`` (the flags /proc/cpuinfo lists)."""
    if machine.lower() not in ("x86_64", "amd64"):
        return ("-DGGML_NATIVE=ON",)
    switches = [f"-D{name}={'ON' if all(f in cpu_features for f in needs) else 'OFF'}" for name, needs in X86_SWITCHES]
    return ("-DGGML_NATIVE=OFF", *switches, *(f"-D{name}=OFF" for name in NEVER))


def this_cpu() -> tuple[str, set[str]]:
    """This machine's architecture and CPU feature flags (none known off Linux)."""
    import platform

    features: set[str] = set()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    features = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return platform.machine(), features


FEATURES = ("-DGGML_RPC=ON",)

# llama.cpp's programs: target name -> what else their build needs.
PROGRAMS = {
    "ggml-rpc-server": (),
    "llama-server": ("-DLLAMA_BUILD_HTML=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF"),
    "llama-bench": (),
    "llama-batched-bench": (),
}
PROGRAM_ARGS = (
    "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF",
)


def cmake_args() -> tuple[str, ...]:
    """The CMake arguments of every llama.cpp build modelyard makes on this machine."""
    return cpu_flags(*this_cpu()) + FEATURES


def reinstall_command() -> str:
    """The command that replaces an installed llama-cpp-python with one built this way."""
    return (f"CMAKE_ARGS=\"{' '.join(cmake_args())}\" pip install --force-reinstall --no-cache-dir "
            f"--no-deps llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}")


def cache_dir() -> Path:
    key = hashlib.sha256("\n".join((LLAMA_CPP_PYTHON_VERSION, *cmake_args())).encode()).hexdigest()[:12]
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "modelyard" / "llama-cpp"
    return root / f"{LLAMA_CPP_PYTHON_VERSION}-{key}"


def _say(message: str) -> None:
    print(f"llama_build: {message}", file=sys.stderr, flush=True)


def _run(command: list[str], log: Path | None = None, **kwargs) -> None:
    """Run ``command``; with ``log``, its output goes there (a compiler's warnings run to
    thousands of lines) and only its last lines are shown if it fails."""
    if log is None:
        subprocess.run(command, check=True, **kwargs)
        return
    with log.open("a") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, **kwargs)
    if result.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-40:]
        raise SystemExit("llama_build: failed: " + " ".join(command) + "\n" + "\n".join(tail)
                         + f"\n(the whole output: {log})")


def source_package(cache: Path) -> Path:
    """llama-cpp-python's source package (downloaded once)."""
    found = sorted((cache / "sdist").glob("llama_cpp_python-*.tar.gz"))
    if found:
        return found[0]
    _say(f"downloading llama-cpp-python {LLAMA_CPP_PYTHON_VERSION}'s source")
    _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", "--no-cache-dir",
          "-d", str(cache / "sdist"), f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"])
    return sorted((cache / "sdist").glob("llama_cpp_python-*.tar.gz"))[0]


def wheel(cache: Path) -> Path:
    """The llama-cpp-python wheel built with ``cmake_args()`` (built once, about 6 minutes on 2 cores)."""
    found = sorted((cache / "wheel").glob("*.whl"))
    if found:
        return found[0]
    sdist = source_package(cache)
    _say(f"building llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} with {' '.join(cmake_args())} "
         "(about 6 minutes on 2 cores, once)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-w", scratch, str(sdist)],
             cache / "build.log", env={**os.environ, "CMAKE_ARGS": " ".join(cmake_args())})
        built = next(Path(scratch).glob("*.whl"))
        (cache / "wheel").mkdir(exist_ok=True)
        target = cache / "wheel" / built.name
        built.replace(target)  # a whole wheel or none: an interrupted build leaves nothing behind
    _say(f"built {target.name} in {time.monotonic() - started:.0f} s")
    return target


def install() -> None:
    """Put this build of llama-cpp-python into the running interpreter's environment, replacing
    any other build of it (a natively built wheel from pip's cache, say)."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel(cache))])


def programs(dest: Path, names: list[str]) -> list[Path]:
    """llama.cpp's programs ``names`` (keys of PROGRAMS), copied into ``dest``; built once, from the
    wheel's source and with its flags, statically linked so they need nothing beside them."""
    unknown = sorted(set(names) - set(PROGRAMS))
    if unknown:
        raise SystemExit(f"llama_build: unknown program(s) {', '.join(unknown)}; known: {', '.join(PROGRAMS)}")
    cache = cache_dir()
    binaries = cache / "bin"
    missing = [name for name in names if not (binaries / name).exists()]
    if missing:
        _build_programs(cache, missing)
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in names:
        shutil.copy2(binaries / name, dest / name)
        copied.append(dest / name)
    return copied


def _cmake() -> str:
    """cmake from PATH or this environment; installed from PyPI into it when neither has one."""
    here = str(Path(sys.executable).parent)
    found = shutil.which("cmake") or shutil.which("cmake", path=here)
    if found is None:
        _say("installing cmake from PyPI (none on PATH)")
        _run([sys.executable, "-m", "pip", "install", "-q", "cmake"])
        found = shutil.which("cmake", path=here)
    if found is None:
        raise SystemExit("llama_build: cmake is needed to build llama.cpp's programs and could not be installed")
    return found


def _build_programs(cache: Path, names: list[str]) -> None:
    sdist = source_package(cache)
    extra = sorted({arg for name in names for arg in PROGRAMS[name]})
    _say(f"building {', '.join(names)} from llama-cpp-python {LLAMA_CPP_PYTHON_VERSION}'s llama.cpp "
         "(a few minutes on 2 cores, once)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=cache.parent) as scratch:
        with tarfile.open(sdist) as archive:
            archive.extractall(scratch, filter="data")
        source = next(Path(scratch).glob("llama_cpp_python-*")) / "vendor" / "llama.cpp"
        build = Path(scratch) / "build"
        log = cache / "build.log"
        cmake = _cmake()
        _run([cmake, "-S", str(source), "-B", str(build), *PROGRAM_ARGS, *cmake_args(), *extra], log)
        _run([cmake, "--build", str(build), "-j", str(os.cpu_count() or 2), "--target", *names], log)
        (cache / "bin").mkdir(parents=True, exist_ok=True)
        for name in names:
            (build / "bin" / name).replace(cache / "bin" / name)
    _say(f"built {', '.join(names)} in {time.monotonic() - started:.0f} s")


def main(argv: list[str]) -> int:
    usage = __doc__.rsplit("\n\n", 1)[-1]
    if argv[:1] == ["cmake-args"]:
        print(" ".join(cmake_args()))
    elif argv[:1] == ["install"]:
        install()
    elif argv[:1] == ["programs"] and len(argv) >= 3:
        for path in programs(Path(argv[1]), argv[2:]):
            print(path)
    else:
        print(usage, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
