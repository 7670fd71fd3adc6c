"""Run the fuzz targets of ``fuzz/targets.py`` with atheris (libFuzzer), a bounded time each.

    python -m fuzz.run --seconds 5                # every target, 5 s each, one process per target
    python -m fuzz.run --seconds 60 --target image
    python -m fuzz.run --seconds 5 --corpus var/fuzz  # keep the corpus between runs

Exit status 0 when no target crashed; otherwise 1, and the crashing input is written to
``<artifacts>/crash-<sha1>`` (libFuzzer's naming) and named in the output. Reproduce one with
``python -m fuzz.run --target image --reproduce var/fuzz/artifacts/crash-...``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path


def _fuzz_one(name: str, seconds: int, corpus: Path, artifacts: Path, reproduce: str | None) -> None:
    import atheris  # noqa: PLC0415 - only in the child process

    with atheris.instrument_imports(include=["fuzz.targets", *INSTRUMENT[name]]):
        from fuzz import targets  # noqa: PLC0415

    warnings.simplefilter("ignore")  # PIL warns on every corrupt tag; decode_image still turns bombs into errors
    target = targets.TARGETS[name]
    if reproduce:
        target(Path(reproduce).read_bytes())
        print(f"{name}: {reproduce} ran without a crash")
        return
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    for index, seed in enumerate(targets.seeds(name)):
        (corpus / f"seed-{index}").write_bytes(seed)
    argv = [sys.argv[0], f"-max_total_time={seconds}", "-timeout=20", "-rss_limit_mb=3072", "-max_len=65536",
            f"-artifact_prefix={artifacts}/", "-print_final_stats=1", str(corpus)]
    atheris.Setup(argv, target)
    atheris.Fuzz()


# The names of fuzz/targets.py's TARGETS, listed here so that the parent process imports nothing the
# child must instrument (a module imported before instrument_imports() runs uninstrumented).
TARGET_NAMES = ("events", "events_json", "image", "proto", "rle", "video")
# What each target's coverage is measured on (instrumenting more makes every start slower).
INSTRUMENT = {
    "events": ["services.byproducts.validation"],
    "events_json": ["services.byproducts.validation", "services.gateway.byproducts_routes",
                    "google.protobuf.json_format"],
    "image": ["services.common.images", "PIL"],
    "proto": ["services.common.interceptors"],
    "rle": ["services.segmentation.masks"],
    "video": ["services.gateway.videos", "zipfile"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5, help="fuzzing time per target")
    parser.add_argument("--target", action="append", choices=TARGET_NAMES, help="default: every target")
    parser.add_argument("--corpus", type=Path, default=None, help="folder kept between runs (default: temporary)")
    parser.add_argument("--reproduce", help="run one input file through --target and exit")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    names = args.target or list(TARGET_NAMES)
    root = args.corpus or Path(tempfile.mkdtemp(prefix="annot-fuzz-"))
    if args.child or args.reproduce:
        _fuzz_one(names[0], args.seconds, root / names[0], root / "artifacts", args.reproduce)
        return 0
    try:
        import atheris  # noqa: F401, PLC0415
    except ImportError:
        print("atheris is not installed: .venv/bin/pip install atheris==3.0.0 (hypothesis covers the same "
              "decoders in tests/hardening)", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        # libFuzzer exits the process when done: one child process per target
        child = subprocess.run([sys.executable, "-m", "fuzz.run", "--child", "--target", name,
                                "--seconds", str(args.seconds), "--corpus", str(root)],
                               capture_output=True, text=True)
        stats = [line for line in child.stderr.splitlines() if line.startswith(("stat::number_of_executed_units",
                                                                                "Done", "==", "INFO: Running"))]
        print(f"{name}: exit {child.returncode}; " + "; ".join(stats[-2:]))
        if child.returncode != 0:
            failed.append(name)
            print(child.stderr[-4000:], file=sys.stderr)
    print(f"fuzzed {len(names)} targets for {args.seconds} s each; crashes in: {', '.join(failed) or 'none'} "
          f"(corpus and artifacts in {root})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
