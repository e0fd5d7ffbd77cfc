"""Training loop of the golden model: the paper's recipe, metrics and checkpoints.

Saving: with ``out_dir`` the loop writes ``checkpoint.npz`` and ``metrics.json`` at the end of
every epoch and ``learning_curves.png`` at the end of the run, each file atomically (a temporary
file in the same folder, then a rename), so a run stopped at any moment leaves either the old or
the new version of each file, never a torn one.  The checkpoint holds, besides the weights and the
normaliser, the training state (:data:`STATE_KEY`): the next epoch and batch, the data order's RNG
state at the start of that epoch, the schedule, the history, the measured ranges and the counters,
so ``train(..., resume=True)`` continues a run exactly where it stopped; a run interrupted and
resumed ends bit for bit equal (weights, history, ranges) to one that was not.

Interrupting: with ``interruptible=True`` (the command line) a SIGINT (Ctrl-C) lets the current
step finish, saves the state after it and raises :class:`TrainingInterrupted`; a second SIGINT
abandons the step at once (the checkpoint of the last epoch stays as it was).
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .compat import check_mode
from .datasets import Dataset, Normaliser, one_hot
from .network import Network, NetworkSpec
from .ranges import RangeTracker

__all__ = ["TrainConfig", "Schedule", "train", "TrainResult", "evaluate", "save_checkpoint",
           "load_checkpoint", "load_train_state", "blas_threads", "TrainingInterrupted",
           "CheckpointError", "RUN_FILES", "CHECKPOINT_FILE", "METRICS_FILE", "CURVES_FILE",
           "STATE_KEY", "write_files_atomically"]

CHECKPOINT_FILE = "checkpoint.npz"
METRICS_FILE = "metrics.json"
CURVES_FILE = "learning_curves.png"
#: The files a run writes in its folder.
RUN_FILES = (CHECKPOINT_FILE, METRICS_FILE, CURVES_FILE)
#: The checkpoint entry holding the training state (JSON).
STATE_KEY = "train_state"
#: Version of the training state's layout.
STATE_VERSION = 1


@dataclass
class TrainConfig:
    epochs: int = 60
    batch: int = 64
    lr_inv: int = 512
    seed: int = 42
    # schedule (reduce-on-plateau, early stopping), see Schedule
    plateau_threshold: float = 0.01
    lr_patience: int = 15
    lr_start_epoch: int = 10
    lr_factor: int = 3
    stop_patience: int = 35
    stop_start_epoch: int = 30
    track_ranges: bool = True
    # "authors": the authors' training loop (golden/compat.py), which drops the last partial
    # batch of every epoch; drop_last_batch can also be set on its own with "spec"
    compat: str = "spec"
    drop_last_batch: bool = False

    def __post_init__(self):
        check_mode(self.compat)
        if self.compat == "authors":
            self.drop_last_batch = True
        if self.epochs < 1:
            raise ValueError("epochs must be >= 1")
        if self.batch < 1:
            raise ValueError("batch must be >= 1")
        if self.lr_inv < 1:
            raise ValueError("lr_inv must be >= 1")


class Schedule:
    """The paper's schedule on test accuracy.

    An epoch *improves* when its accuracy beats the best so far by at least
    ``threshold`` (absolute, as a fraction). From epoch ``lr_start_epoch`` on,
    after ``lr_patience`` epochs without improvement ``lr_inv`` is multiplied by
    ``lr_factor`` (and the patience restarts); from ``stop_start_epoch`` on,
    after ``stop_patience`` epochs without improvement training stops.
    """

    FIELDS = ("lr_inv", "best", "since_improvement", "since_lr_change")

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.lr_inv = cfg.lr_inv
        self.best = -1.0
        self.since_improvement = 0
        self.since_lr_change = 0

    def update(self, epoch: int, accuracy: float) -> bool:
        """Record epoch ``epoch`` (1-based); returns True to stop."""
        c = self.cfg
        if accuracy >= self.best + c.plateau_threshold:
            self.best = accuracy
            self.since_improvement = 0
            self.since_lr_change = 0
        else:
            self.since_improvement += 1
            self.since_lr_change += 1
        if epoch >= c.lr_start_epoch and self.since_lr_change >= c.lr_patience:
            self.lr_inv *= c.lr_factor
            self.since_lr_change = 0
        return epoch >= c.stop_start_epoch and self.since_improvement >= c.stop_patience

    def state(self) -> dict:
        return {k: getattr(self, k) for k in self.FIELDS}

    def restore(self, state: dict) -> None:
        for k in self.FIELDS:
            setattr(self, k, state[k])


@dataclass
class TrainResult:
    metrics: dict
    network: Network
    ranges: RangeTracker | None


class TrainingInterrupted(Exception):
    """SIGINT stopped training; ``saved`` is the checkpoint written (None without out_dir)."""

    def __init__(self, epoch: int, batch: int | None, saved: Path | None, finished_step: bool,
                 out_dir=None):
        self.epoch, self.batch, self.saved, self.finished_step = epoch, batch, saved, finished_step
        where = f"epoch {epoch}" + (f" batch {batch}" if batch is not None else "")
        if out_dir is None:
            what = "nothing saved (no --out)"
        elif finished_step:
            what = f"saved {saved} (continue with --resume)"
        elif saved is not None:
            what = (f"the step was abandoned; {saved} holds the state at the last epoch's end "
                    "(continue with --resume)")
        else:
            what = "the step was abandoned before the first epoch ended: nothing saved"
        super().__init__(f"interrupted at {where}: {what}")


class CheckpointError(ValueError):
    """A file that is not a readable nitrod checkpoint (or training state)."""


def blas_threads(n: int | None):
    """Context limiting BLAS threads (small matrices run best on one thread)."""
    from threadpoolctl import threadpool_limits
    return threadpool_limits(n)


def evaluate(net: Network, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(net.predict(x) == y)) if len(y) else 0.0


# --------------------------------------------------------------------------- files

def write_files_atomically(folder, files: dict) -> None:
    """Write ``files`` (name -> bytes) into ``folder``: every one to a temporary file first, then
    each renamed over its name.  If writing any temporary file fails, none is renamed (the old
    files stay as they were) and the temporary files are removed."""
    folder = Path(folder)
    temps = []
    try:
        for name, data in files.items():
            tmp = folder / f".{name}.tmp-{os.getpid()}"
            temps.append((tmp, folder / name))
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
    except BaseException:
        for tmp, _ in temps:
            try:
                tmp.unlink()
            except OSError:
                pass
        raise
    for tmp, final in temps:
        os.replace(tmp, final)


def _checkpoint_bytes(net: Network, norm: Normaliser, meta: dict, state: dict | None = None) -> bytes:
    arrays = {f"w/{k}": v for k, v in net.weights().items()}
    if state is not None:
        arrays[STATE_KEY] = np.array(json.dumps(state))
    buf = io.BytesIO()
    np.savez(buf, spec=np.array(net.spec.to_json()), meta=np.array(json.dumps(meta)),
             norm_mu=norm.mu, norm_mad=norm.mad, **arrays)
    return buf.getvalue()


def save_checkpoint(path, net: Network, norm: Normaliser, meta: dict, state: dict | None = None) -> None:
    """Write a checkpoint to ``path`` (atomically)."""
    path = Path(path)
    write_files_atomically(path.parent, {path.name: _checkpoint_bytes(net, norm, meta, state)})


def _open_checkpoint(path):
    try:
        z = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {path} does not exist") from None
    except IsADirectoryError:
        raise CheckpointError(f"checkpoint {path} is a folder (give DIR/{CHECKPOINT_FILE})") from None
    except Exception as exc:
        raise CheckpointError(f"{path} is not a nitrod checkpoint ({exc})") from exc
    if not hasattr(z, "files"):
        raise CheckpointError(f"{path} is not a nitrod checkpoint (a plain array, not an .npz "
                              "archive)")
    return z


def _json_entry(z, path, key, what):
    if key not in z.files:
        raise CheckpointError(f"{path} is not a nitrod checkpoint (no {what})")
    try:
        return str(z[key])
    except Exception as exc:
        raise CheckpointError(f"{path}: its {what} cannot be read ({exc})") from exc


def load_checkpoint(path):
    """Returns (network, normaliser, meta)."""
    z = _open_checkpoint(path)
    with z:
        spec_text = _json_entry(z, path, "spec", "network spec")
        try:
            spec = NetworkSpec.from_json(spec_text)
        except (ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"{path}: bad network spec ({type(exc).__name__}: {exc})") from None
        try:
            meta = json.loads(_json_entry(z, path, "meta", "metadata"))
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{path}: bad metadata ({exc})") from None
        if not isinstance(meta, dict):
            raise CheckpointError(f"{path}: bad metadata (not a JSON object)")
        for key in ("norm_mu", "norm_mad"):
            if key not in z.files:
                raise CheckpointError(f"{path} is not a nitrod checkpoint (no {key})")
        net = Network(spec, seed=0)
        try:
            net.load_weights({k[2:]: z[k] for k in z.files if k.startswith("w/")})
        except (KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{path}: bad weights ({exc})") from None
        norm = Normaliser(z["norm_mu"].astype(np.int64), z["norm_mad"].astype(np.int64))
    return net, norm, meta


def load_train_state(path) -> tuple[Network, Normaliser, dict, dict]:
    """``(network, normaliser, meta, state)`` of a checkpoint written during training."""
    net, norm, meta = load_checkpoint(path)
    with _open_checkpoint(path) as z:
        if STATE_KEY not in z.files:
            raise CheckpointError(f"{path} holds no training state (written before nitrod could "
                                  "resume runs): it cannot be resumed")
        try:
            state = json.loads(str(z[STATE_KEY]))
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{path}: bad training state ({exc})") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise CheckpointError(f"{path}: training state of an unknown version")
    return net, norm, meta, state


def _plot_bytes(history) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    try:
        ax[0].plot(ep, [100 * h["train_accuracy"] for h in history], label="train")
        ax[0].plot(ep, [100 * h["test_accuracy"] for h in history], label="test")
        ax[0].set_xlabel("epoch"); ax[0].set_ylabel("accuracy (%)"); ax[0].legend(); ax[0].grid(alpha=.3)
        ax[1].plot(ep, [h["lr_inv"] for h in history])
        ax[1].set_yscale("log"); ax[1].set_xlabel("epoch"); ax[1].set_ylabel("lr_inv")
        ax[1].grid(alpha=.3)
        fig.suptitle("NITRO-D training (integer-only)")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
    finally:
        plt.close(fig)
    return buf.getvalue()


# --------------------------------------------------------------------------- state

def _tracker_state(tracker: RangeTracker | None):
    if tracker is None:
        return None
    return {"by_kind": dict(tracker.by_kind),
            "by_layer": [[k, layer, v] for (k, layer), v in sorted(tracker.by_layer.items())]}


def _restore_tracker(tracker: RangeTracker | None, state) -> None:
    if tracker is None or state is None:
        return
    tracker.by_kind = {k: int(v) for k, v in state["by_kind"].items()}
    tracker.by_layer = {(k, layer): int(v) for k, layer, v in state["by_layer"]}


#: TrainConfig fields a resumed run may change (the rest must equal the checkpoint's).
RESUMABLE_CHANGES = ("epochs", "track_ranges")


def _check_same_run(state: dict, ds: Dataset, spec: NetworkSpec, cfg: TrainConfig, path) -> None:
    if state.get("dataset") != ds.name:
        raise CheckpointError(f"{path} is a run on {state.get('dataset')!r}, not {ds.name!r}")
    saved_spec = NetworkSpec.from_json(state["spec"])
    if saved_spec != spec:
        diff = [k for k in asdict(spec) if asdict(spec)[k] != asdict(saved_spec)[k]]
        raise CheckpointError(f"{path} is a run of another network ({', '.join(diff)} differ: "
                              + ", ".join(f"{k} {asdict(saved_spec)[k]!r} there, "
                                          f"{asdict(spec)[k]!r} here" for k in diff) + ")")
    saved_cfg = state["config"]
    now = asdict(cfg)
    diff = [k for k in now if k not in RESUMABLE_CHANGES and saved_cfg.get(k) != now[k]]
    if diff:
        raise CheckpointError(f"{path} was trained with other settings: "
                              + ", ".join(f"{k} {saved_cfg.get(k)!r} there, {now[k]!r} here"
                                          for k in diff))
    if bool(saved_cfg.get("track_ranges")) != cfg.track_ranges:
        raise CheckpointError(f"{path}: track_ranges was {saved_cfg.get('track_ranges')}; "
                              "resume with the same setting")


class _SigintFlag:
    """While active (main thread only, and SIGINT not ignored: a run started in the background
    or under nohup keeps ignoring it), the first SIGINT sets ``raised``; the second raises
    KeyboardInterrupt."""

    def __init__(self, active: bool):
        self.active = (active and threading.current_thread() is threading.main_thread()
                       and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN)
        self.raised = False
        self._old = None

    def __enter__(self):
        if self.active:
            self._old = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.raised:
            raise KeyboardInterrupt
        self.raised = True

    def __exit__(self, *exc):
        if self.active:
            signal.signal(signal.SIGINT, self._old)
        return False


# --------------------------------------------------------------------------- the loop

def _batch_count(n: int, cfg: TrainConfig) -> int:
    if not cfg.drop_last_batch:
        return (n + cfg.batch - 1) // cfg.batch
    # the authors' loop: len // batch batches, the rest unused
    if n // cfg.batch == 0:
        raise ValueError(f"drop_last_batch with batch {cfg.batch} leaves no batch of the "
                         f"{n} training samples")
    return n // cfg.batch


class _Run:
    """One training run: its data, network and schedule, where it stands (epoch, batch and
    the counters a resumed run continues), what it has measured and how it saves."""

    def __init__(self, ds: Dataset, spec: NetworkSpec, cfg: TrainConfig, out: Path | None,
                 extra_metrics, extra_state):
        self.ds, self.spec, self.cfg, self.out = ds, spec, cfg, out
        self.extra_metrics, self.extra_state = extra_metrics, extra_state
        self.norm = norm = Normaliser.fit(ds.x_train)
        self.x_train, self.x_test = norm(ds.x_train), norm(ds.x_test)
        self.t_train = one_hot(ds.y_train, ds.classes)
        self.net = Network(spec, seed=cfg.seed)
        self.shuffle_rng = np.random.default_rng([cfg.seed, 1])
        self.sched = Schedule(cfg)
        self.tracker = RangeTracker() if cfg.track_ranges else None
        self.history: list[dict] = []
        self.train_time = 0.0
        self.samples = 0
        self.n = len(self.x_train)
        self.nbatches = _batch_count(self.n, cfg)
        self.seen = min(self.n, self.nbatches * cfg.batch)     # samples trained on per epoch
        self.first_epoch, self.first_batch, self.first_correct, self.first_seconds = 1, 0, 0, 0.0
        self.stopped_early = False

    def resume(self, backend, log) -> None:
        """Continue the run saved in ``out`` (refused if it is another run)."""
        path = self.out / CHECKPOINT_FILE
        saved_net, saved_norm, _, state = load_train_state(path)
        _check_same_run(state, self.ds, self.spec, self.cfg, path)
        if not (np.array_equal(saved_norm.mu, self.norm.mu)
                and np.array_equal(saved_norm.mad, self.norm.mad)):
            raise CheckpointError(f"{path}: the dataset's statistics differ from the run's "
                                  "(another version of the data?)")
        self.net.load_weights(saved_net.weights())
        if backend is not None:
            backend.load_weights(saved_net.weights())
        self.shuffle_rng.bit_generator.state = state["rng"]
        self.sched.restore(state["schedule"])
        _restore_tracker(self.tracker, state["ranges"])
        self.history = state["history"]
        self.train_time, self.samples = state["train_seconds"], state["samples"]
        self.first_epoch, self.first_batch = state["epoch"], state["batch"]
        self.first_correct, self.first_seconds = state["correct"], state["epoch_seconds"]
        self.stopped_early = state["stopped_early"]
        if self.extra_state is not None and state.get("extra") is not None:
            self.extra_state[1](state["extra"])
        log(f"resuming {self.out} at epoch {self.first_epoch}"
            + (f" batch {self.first_batch}" if self.first_batch else "")
            + f" ({len(self.history)} epochs done)")

    def metrics(self) -> dict:
        history = self.history
        accs = [h["test_accuracy"] for h in history]
        best = int(np.argmax(accs)) if accs else None
        m = {
            "dataset": self.ds.name,
            "layers": list(self.spec.layers),
            "spec": json.loads(self.spec.to_json()),
            "config": asdict(self.cfg),
            "best_test_accuracy": accs[best] if accs else None,
            "best_epoch": history[best]["epoch"] if accs else None,
            "final_test_accuracy": accs[-1] if accs else None,
            "final_train_accuracy": history[-1]["train_accuracy"] if accs else None,
            "epochs": len(history),
            "stopped_early": self.stopped_early,
            "samples_per_second": self.samples / self.train_time if self.train_time > 0 else 0.0,
            "train_seconds": self.train_time,
            "macs_per_sample": self.net.macs_per_sample(),
            "history": history,
        }
        if self.extra_metrics is not None:
            m.update(self.extra_metrics())
        if self.tracker is not None:
            m["ranges"] = self.tracker.as_dict()
        return m

    def save(self, epoch, batch, rng_state, correct, epoch_seconds, with_plot=False):
        """Write the run's files; the state says where training goes on."""
        if self.out is None:
            return None
        cfg, history = self.cfg, self.history
        state = {"version": STATE_VERSION, "dataset": self.ds.name, "spec": self.spec.to_json(),
                 "config": asdict(cfg), "epoch": epoch, "batch": batch, "correct": correct,
                 "epoch_seconds": epoch_seconds, "rng": rng_state,
                 "schedule": self.sched.state(), "history": history,
                 "train_seconds": self.train_time, "samples": self.samples,
                 "ranges": _tracker_state(self.tracker), "stopped_early": self.stopped_early,
                 "extra": self.extra_state[0]() if self.extra_state is not None else None}
        meta = {"dataset": self.ds.name, "epochs": len(history), "lr_inv": self.sched.lr_inv,
                "final_test_accuracy": history[-1]["test_accuracy"] if history else None,
                "seed": cfg.seed, "compat": cfg.compat, "drop_last_batch": cfg.drop_last_batch}
        files = {CHECKPOINT_FILE: _checkpoint_bytes(self.net, self.norm, meta, state),
                 METRICS_FILE: json.dumps(self.metrics(), indent=2).encode()}
        if with_plot and history:
            files[CURVES_FILE] = _plot_bytes(history)
        write_files_atomically(self.out, files)
        return self.out / CHECKPOINT_FILE

    def last_saved(self):
        path = self.out / CHECKPOINT_FILE if self.out is not None else None
        return path if path is not None and path.exists() else None

    def train_epoch(self, epoch, backend, after_step, bar, sigint) -> int:
        """Train one epoch's batches (from where a resumed run stopped); returns the number
        of correct training predictions.  On a SIGINT (``sigint.raised``) saves the state
        before the next batch and raises :class:`TrainingInterrupted`."""
        cfg, sched, net = self.cfg, self.sched, self.net
        rng_state = self.shuffle_rng.bit_generator.state
        order = self.shuffle_rng.permutation(self.n)
        first = epoch == self.first_epoch
        correct = self.first_correct if first else 0
        epoch_seconds = self.first_seconds if first else 0.0
        t0 = time.perf_counter()
        for b in range(self.first_batch if first else 0, self.nbatches):
            if sigint.raised:
                self.train_time += time.perf_counter() - t0
                if backend is not None:
                    net.load_weights(backend.weights())
                saved = self.save(epoch, b, rng_state, correct,
                                  epoch_seconds + time.perf_counter() - t0, with_plot=True)
                raise TrainingInterrupted(epoch, b, saved, True, self.out)
            idx = order[b * cfg.batch:(b + 1) * cfg.batch]
            x, t = self.x_train[idx], self.t_train[idx]
            if backend is None:
                yhat = net.train_step(x, t, sched.lr_inv, observe=self.tracker)
            else:
                yhat = backend.train_step(x, t, sched.lr_inv)
            if after_step is not None:
                after_step(epoch, b, x, t, sched.lr_inv, yhat)
            correct += int((yhat.argmax(axis=1) == self.ds.y_train[idx]).sum())
            if bar is not None:
                bar.update(1)
        self.train_time += time.perf_counter() - t0
        self.samples += self.seen
        if backend is not None:
            net.load_weights(backend.weights())
        return correct

    def end_epoch(self, epoch, correct, bar, log) -> bool:
        """Score the test split, record the epoch, step the schedule; True to stop early."""
        test_acc = evaluate(self.net, self.x_test, self.ds.y_test)
        rec = {"epoch": epoch, "train_accuracy": correct / self.seen, "test_accuracy": test_acc,
               "lr_inv": self.sched.lr_inv}
        self.history.append(rec)
        stop = self.sched.update(epoch, test_acc)
        if bar is not None:
            bar.set_postfix_str(f"test {100 * test_acc:.2f}%")
            bar.clear()
        log(f"epoch {epoch:3d}  train {100 * rec['train_accuracy']:6.2f}%  "
            f"test {100 * test_acc:6.2f}%  lr_inv {rec['lr_inv']}")
        if stop:
            self.stopped_early = True
            log(f"early stop after epoch {epoch}")
        return stop


def train(ds: Dataset, spec: NetworkSpec, cfg: TrainConfig, out_dir=None, progress=True,
          log=print, threads: int | None = 1, backend=None, after_step=None,
          extra_metrics=None, resume: bool = False, interruptible: bool = False,
          extra_state=None) -> "TrainResult":
    """Train ``spec`` on ``ds`` with the paper's recipe.

    With ``out_dir`` writes checkpoint.npz and metrics.json after every epoch and
    learning_curves.png at the end (module docstring).  ``resume=True`` continues the run
    whose checkpoint is in ``out_dir`` (the same dataset, network and settings; ``epochs`` may
    differ).  ``interruptible``: SIGINT saves and raises :class:`TrainingInterrupted`.

    ``backend`` (an object with ``train_step(x, target, lr_inv) -> yhat``, ``weights()`` and
    ``load_weights(w)``, e.g. one of nitrod/backends.py) runs the training steps instead of the
    NumPy network; the batches, their order and the schedule are the same, and after every
    epoch the backend's weights are loaded into the NumPy network, which scores the test split.
    ``after_step(epoch, batch, x, target, lr_inv, yhat)`` is called after every step (it may
    raise to stop training).  ``extra_metrics()`` returns a dict merged into the metrics.
    ``extra_state``: ``(get, set)``, a JSON-able state of the caller's saved in the checkpoint
    and handed back to ``set`` on resume.
    """
    if spec.compat != cfg.compat:
        raise ValueError(f"the network spec has compat {spec.compat!r} and the training config "
                         f"{cfg.compat!r}: give both the same mode (or set the quirks one by one)")
    if resume and out_dir is None:
        raise ValueError("resume needs the run's folder (out_dir)")
    out = Path(out_dir) if out_dir is not None else None
    run = _Run(ds, spec, cfg, out, extra_metrics, extra_state)
    if resume:
        run.resume(backend, log)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    finished = run.stopped_early or run.first_epoch > cfg.epochs
    bar = None
    if progress and not finished:
        from tqdm import tqdm
        bar = tqdm(total=(cfg.epochs - run.first_epoch + 1) * run.nbatches - run.first_batch,
                   unit="batch", file=sys.stderr, leave=False, dynamic_ncols=True)
    epoch = run.first_epoch
    sigint = _SigintFlag(interruptible)
    try:
        with blas_threads(threads), sigint:
            while not finished and epoch <= cfg.epochs:
                correct = run.train_epoch(epoch, backend, after_step, bar, sigint)
                stop = run.end_epoch(epoch, correct, bar, log)
                epoch += 1
                finished = stop or epoch > cfg.epochs
                run.save(epoch, 0, run.shuffle_rng.bit_generator.state, 0, 0.0,
                         with_plot=finished)
    except TrainingInterrupted:
        raise
    except KeyboardInterrupt:
        if not sigint.active:
            raise
        # the second SIGINT (or one outside the handler): the step was abandoned; the last
        # epoch's checkpoint stays as it was
        raise TrainingInterrupted(epoch, None, run.last_saved(), False, out) from None
    except Exception:
        if sigint.raised:       # e.g. a simulator child that the same Ctrl-C stopped
            raise TrainingInterrupted(epoch, None, run.last_saved(), False, out) from None
        raise
    finally:
        if bar is not None:
            bar.close()
    if not run.history:
        raise ValueError("no epoch was trained")
    if run.first_epoch > cfg.epochs or (resume and run.first_epoch == epoch):
        log(f"the run in {out} is complete ({len(run.history)} epochs)"
            + ("; it stopped early" if run.stopped_early else "") + ": nothing to train")
    return TrainResult(run.metrics(), run.net, run.tracker)
