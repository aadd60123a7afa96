"""The run folder: one run's outputs, its config (the contract that makes a rerun a resume), its lock, and what is
already done."""
from __future__ import annotations

import atexit
import json
import math
import os
import shutil
import socket
import time
import warnings
from pathlib import Path

import yaml

from ..errors import ConfigError

CONFIG, LOCK, METRICS, TRAJECTORIES = "config.yaml", ".lock", "metrics.jsonl", "trajectories.jsonl"
OUTPUTS = ("images", "best", "grids", METRICS, TRAJECTORIES, CONFIG)
TEMPORARY = ".tmp-"
UNREADABLE = ".unreadable"  # a resume sets lines it cannot read aside in FILE.unreadable
# config keys that do not change what a run writes: a rerun may change them and still resume
FREE_KEYS = ("trainer.", "writer.", "config", "model.init_args.progress", "data.init_args.num_workers",
             "return_predictions", "ckpt_path")
KEPT_KEYS = ("trainer.precision",)  # ... except these


def first_process() -> bool:
    """Whether this process is global rank 0 as its launcher set it (torchrun: RANK; SLURM: SLURM_PROCID; Lightning's
    DDP launcher: NODE_RANK and LOCAL_RANK), before the Trainer exists; true when alone."""
    if os.environ.get("RANK", "").isdigit():
        return int(os.environ["RANK"]) == 0
    if os.environ.get("SLURM_PROCID", "").isdigit() and int(os.environ.get("SLURM_NTASKS", 1)) > 1:
        return int(os.environ["SLURM_PROCID"]) == 0
    return int(os.environ.get("NODE_RANK", 0) or 0) == 0 and int(os.environ.get("LOCAL_RANK", 0) or 0) == 0


def flat(config: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def contract(config: dict) -> dict:
    """The keys of a run's config that decide its outputs."""
    return {k: v for k, v in flat(config).items()
            if k in KEPT_KEYS or not any(k == free.rstrip(".") or k.startswith(free) for free in FREE_KEYS)}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunFolder:
    """``path`` holds one run. :meth:`open` (global rank 0, before any model loads) takes the lock, removes what a
    killed run left half-written, and checks the config against the one the folder was started with."""

    def __init__(self, path: str | os.PathLike, key: str = "writer.output_dir"):
        self.path, self.key = Path(path), key
        self.metrics, self.trajectories = self.path / METRICS, self.path / TRAJECTORIES
        self.locked = False

    # ---- start -------------------------------------------------------------------------------
    def open(self, config: dict | None = None, overwrite: bool = False) -> None:
        self.make()
        if not self.lock():
            return  # this process opened it already
        if overwrite:
            self.clear()
        self.clean()
        if config is not None:
            self.check_config(config)

    def make(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(self.key, f"{str(self.path)!r} is a file, not a folder")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / f"{TEMPORARY}probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise ConfigError(self.key, f"cannot write to {str(self.path)!r}: {err.strerror or err}") from err

    def lock(self) -> bool:
        """Create ``.lock`` (pid, host, start); a lock of a dead process on this host is taken over. False: this
        process holds it already."""
        lock = self.path / LOCK
        mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    holder = json.loads(lock.read_text() or "{}")
                except (OSError, ValueError):
                    holder = {}
                if holder.get("pid") == os.getpid() and holder.get("host") == mine["host"]:
                    self.locked = True
                    return False
                if holder.get("host") == mine["host"] and not pid_alive(int(holder.get("pid", 0))):
                    lock.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                raise ConfigError(self.key, f"{str(self.path)!r} is in use by process {holder.get('pid')} on "
                                            f"{holder.get('host')} since {holder.get('started')} ({lock}); wait for "
                                            f"that run, or delete the lock if it is gone") from None
            with os.fdopen(fd, "w") as f:
                json.dump(mine, f)
            self.locked = True
            atexit.register(self.release)
            return True
        raise ConfigError(self.key, f"cannot take the lock {lock}")

    def release(self) -> None:
        lock = self.path / LOCK
        if self.locked:
            try:
                if json.loads(lock.read_text()).get("pid") == os.getpid():
                    lock.unlink()
            except (OSError, ValueError):
                pass
            self.locked = False

    def clear(self) -> None:
        """Remove an earlier run's outputs (``writer.overwrite: true``)."""
        for name in OUTPUTS:
            target = self.path / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)

    def clean(self) -> None:
        """Remove temporary files of a killed run and a metrics or trajectory line it left half-written; set aside
        the lines that cannot be read and the metrics lines whose image files are gone, so that a rerun makes those
        generations again (:meth:`set_aside`)."""
        leftovers = list(self.path.glob(f"{TEMPORARY}*"))
        for name in ("images", "best", "grids"):  # ids with '/' write into subfolders
            leftovers += (self.path / name).rglob(f"{TEMPORARY}*") if (self.path / name).is_dir() else []
        for tmp in leftovers:
            tmp.unlink(missing_ok=True)
        for lines in (self.metrics, self.trajectories):
            data = lines.read_bytes() if lines.exists() else b""
            if data and not data.endswith(b"\n"):
                with open(lines, "r+b") as f:
                    f.truncate(data.rfind(b"\n") + 1)
        self.set_aside(self.metrics, "the generations they were are made again", self.has_files)
        self.set_aside(self.trajectories, "reports leave their curves out")

    def has_files(self, row: dict) -> bool:
        """Whether a metrics line's image files are all there."""
        return all((self.path / row[key]).is_file() for key in ("image", "best_image") if row.get(key))

    def set_aside(self, path: Path, then: str, complete=None) -> None:
        """Move the lines of a JSON-lines file that are not a generation's (a JSON object with its id and sample) to
        ``FILE.unreadable``, and drop the lines that ``complete`` says lack their files; a warning for each kind says
        which and ``then`` what follows."""
        if not path.exists():
            return
        kept, unreadable, incomplete = [], [], []
        for number, line in enumerate(path.read_text(errors="replace").splitlines(keepends=True), 1):
            row = generation(line)
            if row is None:
                unreadable += [(number, line)] if line.strip() else []
            elif complete is not None and not complete(row):
                incomplete.append(f"{row['id']}_{row['sample']}")
            else:
                kept.append(line)
        if unreadable:
            with open(f"{path}{UNREADABLE}", "a") as f:
                f.write("".join(line for _, line in unreadable))
            warnings.warn(f"{self.key}: {path}: line(s) {', '.join(str(n) for n, _ in unreadable[:20])} could not be "
                          f"read; they are kept in {path.name}{UNREADABLE} and {then}")
        if incomplete:
            warnings.warn(f"{self.key}: {len(incomplete)} finished generation(s) lack their image files in {self.path} "
                          f"({', '.join(incomplete[:10])}{', ...' if len(incomplete) > 10 else ''}); they are made again")
        if unreadable or incomplete:
            tmp = self.path / f"{TEMPORARY}{path.name}"
            tmp.write_text("".join(kept))
            os.replace(tmp, path)

    def check_config(self, config: dict) -> None:
        """A folder with outputs resumes only the run of the same config."""
        saved, started = self.path / CONFIG, self.started()
        if saved.exists() and started:
            before, now = contract(self.saved_config()), contract(config)
            changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
            if changed:
                shown = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed[:3])
                more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
                raise ConfigError(self.key, f"{str(self.path)!r} holds a run of another config ({shown}{more}); "
                                            f"rerun with the same config to resume it, choose another folder, or "
                                            f"start it afresh with --writer.overwrite true")
        elif started and not saved.exists():
            raise ConfigError(self.key, f"{str(self.path)!r} holds outputs but no {CONFIG}; choose another folder, "
                                        f"or start it afresh with --writer.overwrite true")

    def saved_config(self) -> dict:
        """The config the folder's run started with ({} before a run started in it)."""
        saved = self.path / CONFIG
        return (yaml.safe_load(saved.read_text()) or {}) if saved.exists() and self.started() else {}

    def record(self, config_text: str) -> None:
        """Write ``config.yaml`` unless the folder's run has started (then the one it started with stays)."""
        if (self.path / CONFIG).exists() and self.started():
            return
        tmp = self.path / f"{TEMPORARY}{CONFIG}"
        tmp.write_text(config_text)
        os.replace(tmp, self.path / CONFIG)

    def started(self) -> bool:
        """Whether the folder holds outputs of a run."""
        return self.metrics.exists() and self.metrics.stat().st_size > 0 or any(
            (self.path / name).is_dir() and any((self.path / name).iterdir()) for name in ("images", "best"))

    # ---- progress ----------------------------------------------------------------------------
    def done(self) -> dict[tuple[str, int], dict]:
        """(id, generation) -> its metrics line, for every generation with a complete line (written after its PNGs);
        a line that is not a generation's is skipped (:meth:`clean` set it aside when the run started)."""
        rows = read_jsonl(self.metrics)[0] if self.metrics.exists() else []
        return {(row["id"], row["sample"]): row for row in rows if is_generation(row)}


# ---- reading metrics lines -------------------------------------------------------------------------------------
def read_jsonl(path: Path) -> tuple[list[dict], list[str]]:
    """The JSON objects of a JSON-lines file and a note for each line left out: a last line without its newline (a
    run stopped while writing it, as :meth:`RunFolder.done <lit_featinv.runs.folder.RunFolder.done>` reads it) or a
    line that is not a JSON object."""
    *lines, last = path.read_text().split("\n")
    notes = [f"{path}: the last line is cut off (truncated file); it is ignored"] if last.strip() else []
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line) if line.strip() else None
        except ValueError:
            row = "not JSON"
        if row is not None and not isinstance(row, dict):
            notes.append(f"{path}: line {number} is not a JSON object; it is ignored")
        elif row is not None:
            rows.append(row)
    return rows, notes


def generation(line: str) -> dict | None:
    """A metrics or trajectory line as its generation's JSON object; None when it is not one (:func:`is_generation`)."""
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if is_generation(row) else None


def is_generation(row) -> bool:
    """A JSON object with a generation's ``id`` and ``sample``."""
    return isinstance(row, dict) and isinstance(row.get("id"), str) and isinstance(row.get("sample"), int)


def ok(line: dict) -> bool:
    return line.get("status", "ok") == "ok"


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def run_stats(lines: list[dict]) -> dict:
    """Count of generations (written, failed) and the mean / worst cosine, mean rel. L2, loss, seconds and prior score
    over the written (over the lines where they are defined; nan where none is)."""
    done = [line for line in lines if ok(line)]
    cosines = [line["cosine"] for line in done if line.get("cosine") is not None]  # null: undefined (a zero target)
    means = {f"mean_{key}": mean([line[key] for line in done if line.get(key) is not None])
             for key in ("rel_l2", "loss", "seconds", "prior_score")}
    return {"generations": len(done), "failed": len(lines) - len(done), "mean_cosine": mean(cosines),
            "worst_cosine": min(cosines, default=math.nan), **means}
