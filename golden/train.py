"""Training loop of the golden model: the paper's recipe, metrics and checkpoints."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .compat import check_mode
from .datasets import Dataset, Normaliser, one_hot
from .network import Network, NetworkSpec
from .ranges import RangeTracker

__all__ = ["TrainConfig", "Schedule", "train", "TrainResult", "evaluate", "save_checkpoint", "load_checkpoint",
           "blas_threads"]


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


@dataclass
class TrainResult:
    metrics: dict
    network: Network
    ranges: RangeTracker | None


def blas_threads(n: int | None):
    """Context limiting BLAS threads (small matrices run best on one thread)."""
    from threadpoolctl import threadpool_limits
    return threadpool_limits(n)


def evaluate(net: Network, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(net.predict(x) == y)) if len(y) else 0.0


def save_checkpoint(path, net: Network, norm: Normaliser, meta: dict) -> None:
    arrays = {f"w/{k}": v for k, v in net.weights().items()}
    np.savez(path, spec=np.array(net.spec.to_json()), meta=np.array(json.dumps(meta)),
             norm_mu=norm.mu, norm_mad=norm.mad, **arrays)


def load_checkpoint(path):
    """Returns (network, normaliser, meta)."""
    try:
        z = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {path} does not exist") from None
    except Exception as exc:
        raise ValueError(f"{path} is not a nitrod checkpoint ({exc})") from exc
    with z:
        if "spec" not in z.files:
            raise ValueError(f"{path} is not a nitrod checkpoint (no network spec)")
        spec = NetworkSpec.from_json(str(z["spec"]))
        meta = json.loads(str(z["meta"]))
        net = Network(spec, seed=0)
        net.load_weights({k[2:]: z[k] for k in z.files if k.startswith("w/")})
        norm = Normaliser(z["norm_mu"].astype(np.int64), z["norm_mad"].astype(np.int64))
    return net, norm, meta


def _plot(history, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].plot(ep, [100 * h["train_accuracy"] for h in history], label="train")
    ax[0].plot(ep, [100 * h["test_accuracy"] for h in history], label="test")
    ax[0].set_xlabel("epoch"); ax[0].set_ylabel("accuracy (%)"); ax[0].legend(); ax[0].grid(alpha=.3)
    ax[1].plot(ep, [h["lr_inv"] for h in history])
    ax[1].set_yscale("log"); ax[1].set_xlabel("epoch"); ax[1].set_ylabel("lr_inv")
    ax[1].grid(alpha=.3)
    fig.suptitle("NITRO-D training (integer-only)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train(ds: Dataset, spec: NetworkSpec, cfg: TrainConfig, out_dir=None, progress=True,
          log=print, threads: int | None = 1, backend=None, after_step=None,
          extra_metrics=None) -> "TrainResult":
    """Train ``spec`` on ``ds`` with the paper's recipe.

    With ``out_dir`` writes metrics.json, learning_curves.png and checkpoint.npz.

    ``backend`` (an object with ``train_step(x, target, lr_inv) -> yhat`` and ``weights()``,
    e.g. one of nitrod/backends.py) runs the training steps instead of the NumPy network;
    the batches, their order and the schedule are the same, and after every epoch the
    backend's weights are loaded into the NumPy network, which scores the test split.
    ``after_step(epoch, batch, x, target, lr_inv, yhat)`` is called after every step (it may
    raise to stop training).  ``extra_metrics()`` returns a dict merged into the metrics.
    """
    if spec.compat != cfg.compat:
        raise ValueError(f"the network spec has compat {spec.compat!r} and the training config "
                         f"{cfg.compat!r}: give both the same mode (or set the quirks one by one)")
    norm = Normaliser.fit(ds.x_train)
    x_train, x_test = norm(ds.x_train), norm(ds.x_test)
    t_train = one_hot(ds.y_train, ds.classes)
    net = Network(spec, seed=cfg.seed)
    shuffle_rng = np.random.default_rng([cfg.seed, 1])
    sched = Schedule(cfg)
    tracker = RangeTracker() if cfg.track_ranges else None
    history = []
    train_time = 0.0
    samples = 0
    n = len(x_train)
    if cfg.drop_last_batch:      # the authors' loop: len // batch batches, the rest unused
        nbatches = n // cfg.batch
        if nbatches == 0:
            raise ValueError(f"drop_last_batch with batch {cfg.batch} leaves no batch of the "
                             f"{n} training samples")
    else:
        nbatches = (n + cfg.batch - 1) // cfg.batch
    seen = min(n, nbatches * cfg.batch)        # samples trained on per epoch
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.epochs * nbatches, unit="batch", file=sys.stderr, leave=False,
                   dynamic_ncols=True)
    stopped_early = False
    with blas_threads(threads):
        for epoch in range(1, cfg.epochs + 1):
            order = shuffle_rng.permutation(n)
            correct = 0
            t0 = time.perf_counter()
            for b in range(nbatches):
                idx = order[b * cfg.batch:(b + 1) * cfg.batch]
                if backend is None:
                    yhat = net.train_step(x_train[idx], t_train[idx], sched.lr_inv,
                                          observe=tracker)
                else:
                    yhat = backend.train_step(x_train[idx], t_train[idx], sched.lr_inv)
                if after_step is not None:
                    after_step(epoch, b, x_train[idx], t_train[idx], sched.lr_inv, yhat)
                correct += int((yhat.argmax(axis=1) == ds.y_train[idx]).sum())
                if bar is not None:
                    bar.update(1)
            train_time += time.perf_counter() - t0
            samples += seen
            if backend is not None:
                net.load_weights(backend.weights())
            test_acc = evaluate(net, x_test, ds.y_test)
            rec = {"epoch": epoch, "train_accuracy": correct / seen, "test_accuracy": test_acc,
                   "lr_inv": sched.lr_inv}
            history.append(rec)
            stop = sched.update(epoch, test_acc)
            msg = (f"epoch {epoch:3d}  train {100 * rec['train_accuracy']:6.2f}%  "
                   f"test {100 * test_acc:6.2f}%  lr_inv {rec['lr_inv']}")
            if bar is not None:
                bar.set_postfix_str(f"test {100 * test_acc:.2f}%")
                bar.clear()
            log(msg)
            if stop:
                stopped_early = True
                log(f"early stop after epoch {epoch}")
                break
    if bar is not None:
        bar.close()
    accs = [h["test_accuracy"] for h in history]
    best = int(np.argmax(accs))
    metrics = {
        "dataset": ds.name,
        "layers": list(spec.layers),
        "spec": json.loads(spec.to_json()),
        "config": asdict(cfg),
        "best_test_accuracy": accs[best],
        "best_epoch": history[best]["epoch"],
        "final_test_accuracy": accs[-1],
        "final_train_accuracy": history[-1]["train_accuracy"],
        "epochs": len(history),
        "stopped_early": stopped_early,
        "samples_per_second": samples / train_time if train_time > 0 else 0.0,
        "train_seconds": train_time,
        "macs_per_sample": net.macs_per_sample(),
        "history": history,
    }
    if extra_metrics is not None:
        metrics.update(extra_metrics())
    if tracker is not None:
        metrics["ranges"] = tracker.as_dict()
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_checkpoint(out / "checkpoint.npz", net, norm,
                        {"dataset": ds.name, "epochs": len(history), "lr_inv": sched.lr_inv,
                         "final_test_accuracy": accs[-1], "seed": cfg.seed,
                         "compat": cfg.compat, "drop_last_batch": cfg.drop_last_batch})
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        _plot(history, out / "learning_curves.png")
    return TrainResult(metrics, net, tracker)
