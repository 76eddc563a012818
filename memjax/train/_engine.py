"""The vectorized replica trainer: many independent training runs in one compiled program.

Structure of the program for a chunk of replicas (all of it inside one ``jax.jit``):

* the replica axis is sharded over the available devices (``shard_map``), and on each
  device split into groups of ``G`` replicas processed one group after another
  (``lax.map``), so each group's parameters and optimizer state stay in cache;
* inside a group, ``lax.scan`` over epochs and steps advances all G replicas together; each
  stage (init from the replica's key, every minibatch step, the recordings, the final
  evaluation of every train and test example) applies a one-replica function to each
  replica of the group (``_map_replicas``): batched with ``vmap``, or unrolled into G
  independent chains of ops (``TrainConfig.vectorize``; "auto" unrolls on CPU and vmaps
  on accelerators).

Replica r's key is ``fold_in(PRNGKey(seed), r)``; its init, its per-epoch shuffles, its
augmentations (``memjax.train.augment.step_key``) and so its whole run depend on (seed, r, its
mask) only. A network with BatchNorm carries its running averages in the replica's
training state next to its parameters and optimizer state; its batch statistics come from
the valid rows of the replica's own minibatch, so they too are the replica's alone. Steps
past the end of a replica's epoch (subsets of unequal size) are exact no-ops, so neither
chunking, grouping, nor the device count changes any replica's result.

uint8 data (pixels) stay bytes on device: a step gathers its minibatch, augments it and
standardizes it per channel (``Dataset.channel_stats``); evaluation does the same per
tile of ``EVAL_TILE`` examples.

Every step also records, from the logits its forward pass already computes, whether each
example of its minibatch was classified correctly before the update (Toneva et al. 2019's
presentations): per replica one bit per example (right at its last presentation?), a count
of correct -> incorrect transitions and the epoch from which it stays right
(``ReplicaOutputs.forgetting_events`` / ``first_learned``).

Asked for progress, the program also calls back to the host (``jax.debug.callback``,
unordered) with the replica-epochs a group has finished, not counting padding: after every
epoch of every group when a device holds fewer groups than there are epochs, otherwise once
at the end of each group (still more often than once per epoch of the chunk, at a fraction
of the host round trips). The callback reads nothing the training computes except, to run
after the work it reports, the step counters or losses, so results are the same with and
without it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from memjax.data import Dataset
from memjax.errors import ConfigError, DataTypeError
from memjax.models import Spec, build_network
from memjax.outputs import ReplicaOutputs, loss_from_logits, per_example_metrics
from memjax.train import _dp as dp
from memjax.train import augment, recipes
from memjax.train._config import TrainConfig
from memjax.train._memory import auto_group_size, replica_strategy
from memjax.train._program_cache import ProgramCache
from memjax.train.queries import check_queries, query_margins

__all__ = [
    "train_replicas",
    "TrainConfig",
    "steps_per_epoch",
    "replica_keys",
    "replica_init_keys",
    "Checkpoints",
    "train_checkpoints",
]

EVAL_TILE = 1024
NEVER_PRESENTED = -1  # first_learned of an example a replica never saw


class Presentations(NamedTuple):
    """One replica's presentation record (Toneva et al. 2019), each (n,) over the training
    examples (a group's: (G, n)); see ``_present``."""

    last: jax.Array  # bool: right at its last presentation
    events: jax.Array  # int32: correct -> incorrect transitions so far (forgetting events)
    first: jax.Array  # int32: first_learned so far (epochs / NEVER_PRESENTED, see _present)


class Carry(NamedTuple):
    """A group's training state from step to step; every leaf leads with G (its replicas)."""

    params: Any
    state: Any  # BatchNorm's running averages ({} for other specs)
    opt_state: Any
    steps: jax.Array  # (G,) int32: optimizer steps each replica has taken
    seen: Presentations


def _present(
    seen: Presentations,
    idx: jax.Array,
    correct: jax.Array,
    valid: jax.Array,
    epoch: jax.Array,
    epochs: int,
) -> Presentations:
    """One replica's presentation record after one minibatch (Toneva et al. 2019).

    ``seen`` = (last (n,) bool: right at its last presentation, events (n,) int32:
    correct -> incorrect transitions between consecutive presentations, first (n,) int32:
    epoch index (from 0) of the presentation from which it has been right at every
    presentation; ``epochs`` while its last presentation was wrong; NEVER_PRESENTED before
    its first presentation). ``idx`` (b,) are the batch's examples, ``correct`` (b,) their
    correctness before the update, ``valid`` (b,) bool marks the real (non-padding)
    positions, whose examples are distinct; padding positions change nothing.
    """
    last, events, first = seen
    target = jnp.where(valid, idx, last.shape[0])  # out of bounds: dropped
    was = last[idx]
    learned = jnp.where(correct, jnp.where(was, first[idx], epoch), epochs)
    return Presentations(
        last.at[target].set(correct, mode="drop"),
        events.at[target].add((was & ~correct).astype(events.dtype), mode="drop"),
        first.at[target].set(learned.astype(first.dtype), mode="drop"),
    )


def replica_keys(seed: int, replica_ids: np.ndarray) -> jax.Array:
    """Raw uint32 key data (R, 2) of each replica: a function of (seed, r) alone."""
    base = jax.random.PRNGKey(seed)
    return jax.vmap(lambda r: jax.random.fold_in(base, r))(jnp.asarray(replica_ids, jnp.uint32))


def _init_and_data_keys(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A replica's key splits into the key of its initialization and that of its data order."""
    init_key, data_key = jax.random.split(key)
    return init_key, data_key


def replica_init_keys(seed: int, replica_ids: np.ndarray) -> jax.Array:
    """Keys (R, 2) from which the trainer initializes each replica's parameters, so theory
    and tests can rebuild a replica's network at initialization exactly."""
    return jax.vmap(lambda k: _init_and_data_keys(k)[0])(replica_keys(seed, replica_ids))


def steps_per_epoch(subset_size: np.ndarray | int, cfg: TrainConfig, n: int) -> np.ndarray:
    """Optimizer steps in one epoch for a subset of the given size."""
    size = np.asarray(subset_size)
    if cfg.batch_size is None:
        return np.ones_like(size)
    b = min(cfg.batch_size, n)
    return size // b if cfg.drop_last else -(-size // b)


def _linearized(apply_fn: Callable, params0) -> Callable:
    """f(p0, x) + J(p0, x) (p - p0): the network's first-order Taylor expansion at init."""

    def apply_lin(params, x):
        delta = jax.tree.map(jnp.subtract, params, params0)
        out, tangent = jax.jvp(lambda p: apply_fn(p, x), (params0,), (delta,))
        return out + tangent

    return apply_lin


def tiled(fn: Callable, x: jax.Array, y: jax.Array, tile: int) -> dict[str, jax.Array]:
    """Apply a per-example function over tiles of ``tile`` examples (bounded activation
    memory); x (n, ...), y (n,) -> each output (n, ...)."""
    n = x.shape[0]
    nb = -(-n // tile)
    pad = nb * tile - n
    xb = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape(nb, tile, *x.shape[1:])
    yb = jnp.pad(y, (0, pad)).reshape(nb, tile)
    out = lax.map(lambda a: fn(*a), (xb, yb))
    return jax.tree.map(lambda v: v.reshape(nb * tile, *v.shape[2:])[:n], out)


def _map_replicas(strategy: str, fn: Callable) -> Callable:
    """Apply a one-replica function to each replica of a group (all arguments lead with G).

    "vmap" batches the replicas into one kernel per op; "unroll" traces G independent chains
    of plain per-replica ops, which XLA:CPU can run side by side on its cores and whose
    results do not depend on G at all.
    """
    if strategy == "vmap":
        return jax.vmap(fn)

    def unrolled(*args):
        g = jax.tree.leaves(args)[0].shape[0]
        outs = [fn(*jax.tree.map(lambda a, i=i: a[i], args)) for i in range(g)]
        return jax.tree.map(lambda *v: jnp.stack(v), *outs)

    return unrolled


def check_training(spec: Spec, ds: Dataset, cfg: TrainConfig) -> None:
    """Early, specific refusals of (spec, data, cfg) combinations the trainer cannot run."""
    augment.check_images(ds.input_shape, cfg.augment, cfg.cutout)
    if cfg.linearize and getattr(spec, "norm", None) == "batch":
        raise ConfigError(
            f"linearize=True with {type(spec).__name__}(norm='batch'): the Taylor expansion "
            "of a network whose BatchNorm statistics depend on the minibatch is not defined "
            "here; use norm='group' or norm='none'"
        )
    if cfg.dp is not None and getattr(spec, "norm", None) == "batch":
        raise ConfigError(
            f"dp with {type(spec).__name__}(norm='batch'): BatchNorm mixes the examples of a "
            "minibatch, so per-example gradients (and DP-SGD's guarantee) are not defined; "
            "use norm='group' or norm='none'"
        )


class GroupProgram:
    """One group of replicas' whole runs (init -> train -> eval) for a (spec, data, cfg).

    ``standardize`` is None, or the per-channel (mean, std) of uint8 inputs. With
    ``keep_params`` every recording also keeps the evaluated parameters and training state
    (TracIn's checkpoints, memjax.analysis.tracin)."""

    def __init__(
        self,
        spec: Spec,
        cfg: TrainConfig,
        input_shape,
        num_classes: int,
        n: int,
        strategy: str,
        standardize: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
        keep_params: bool = False,
    ):
        self.cfg = cfg
        self.keep_params = keep_params
        self.n = n
        self.net = build_network(spec, tuple(input_shape), num_classes, cfg.conv, cfg.compute_dtype)
        self.opt = recipes.ReplicaOptimizer(cfg)
        self.batch = n if cfg.batch_size is None else min(cfg.batch_size, n)
        self.map = partial(_map_replicas, strategy)
        self.standardize = standardize

    def _features(self, x):
        """Model inputs from stored examples: uint8 pixels standardized per channel."""
        if self.standardize is None:
            return x
        mean, std = (jnp.asarray(v, jnp.float32) for v in self.standardize)
        return (x.astype(jnp.float32) - mean) / std

    def _train_inputs(self, xb, key):
        """A step's minibatch as the model sees it: augmented (``key`` of the replica's
        epoch and step), standardized, with cutout holes."""
        k_crop, k_cut = jax.random.split(key)
        if self.cfg.augment != "none":
            xb = augment.crop_flip(k_crop, xb, flip=self.cfg.augment == "crop_flip")
        xb = self._features(xb)
        if self.cfg.cutout:
            xb = augment.cutout(k_cut, xb, self.cfg.cutout)
        return xb

    def _apply(self, params, state, params0, x, train=False, valid=None):
        """(logits, state) of one replica; ``train`` uses (and updates) batch statistics."""
        if self.cfg.linearize:  # stateless networks only (check_training)
            apply_fn = lambda p, a: self.net.apply(p, state, a)[0]  # noqa: E731
            return _linearized(apply_fn, params0)(params, x), state
        return self.net.apply(params, state, x, train, valid)

    def _example_losses(self, params, state, params0, x, y):
        logits = self._apply(params, state, params0, x)[0]
        return loss_from_logits(logits, y, self.cfg.loss, self.cfg.label_smoothing)

    def _step(
        self,
        params,
        state,
        opt_state,
        step,
        seen,
        params0,
        total_steps,
        epoch,
        key,
        xb,
        yb,
        idx,
        valid,
        noise_key=None,
        expected=None,
    ):
        """One minibatch step of one replica; a no-op when the batch has no valid example.
        ``state`` holds its BatchNorm running averages, ``key`` its augmentation key for this
        step. ``seen`` is the replica's presentation record, updated with the correctness of
        the batch's examples under the parameters before this step's update. With ``cfg.dp``
        the gradient is DP-SGD's (private_gradient), from ``noise_key`` and the ``expected`` batch
        size."""
        xb = self._train_inputs(xb, key)

        def batch_loss(p, weight, denom):
            logits, new_state = self._apply(p, state, params0, xb, True, valid)
            losses = loss_from_logits(logits, yb, self.cfg.loss, self.cfg.label_smoothing)
            return jnp.sum(losses * weight) / denom, (jnp.argmax(logits, axis=-1) == yb, new_state)

        if self.cfg.dp is None:
            (_, (correct, new_state)), grads = jax.value_and_grad(batch_loss, has_aux=True)(
                params, valid, jnp.maximum(jnp.sum(valid), 1.0)
            )
        else:  # no BatchNorm here (check_training): per-example losses are well defined

            def example_loss(p, xi, yi):
                return self._example_losses(p, state, params0, xi[None], yi[None])[0]

            grads, (correct, new_state) = dp.private_gradient(
                batch_loss, example_loss, params, xb, yb, valid, noise_key, expected, self.cfg.dp
            )
        lr = recipes.learning_rate(self.cfg, step, total_steps)
        new_params, new_opt_state = self.opt.update(grads, opt_state, params, lr)
        active = jnp.sum(valid) > 0
        if self.cfg.dp is not None and self.cfg.dp.sampling == "poisson":
            active = expected > 0  # an empty Poisson draw still takes its noisy step
        keep = partial(jax.tree.map, lambda new, old: jnp.where(active, new, old))
        return Carry(
            keep(new_params, params),
            keep(new_state, state),
            keep(new_opt_state, opt_state),
            step + active.astype(step.dtype),
            _present(seen, idx, correct, valid > 0, epoch, self.cfg.epochs),
        )

    def _order(self, epoch_key, mask, n_steps: int):
        """A replica's batches for one epoch: its subset in a fresh random order, padded."""
        b = self.batch
        size = jnp.sum(mask)
        scores = jnp.where(mask, jax.random.uniform(epoch_key, (self.n,)), 2.0)
        order = jnp.argsort(scores)  # the subset first, in random order
        usable = size if not self.cfg.drop_last else (size // b) * b
        pad = n_steps * b - self.n
        order = jnp.pad(order, (0, max(pad, 0)))[: n_steps * b].reshape(n_steps, b)
        pos = jnp.arange(n_steps * b).reshape(n_steps, b)
        return order, (pos < usable).astype(jnp.float32)

    def _epoch(
        self, carry, params0, total_steps, x, y, keys, epoch_keys, epoch, masks, n_steps: int
    ):
        """One pass (epoch index ``epoch``, from 0) of every replica over its own subset;
        ``keys`` (G, 2) are the replicas' keys, from which their augmentations derive."""
        cfg = self.cfg
        full = cfg.batch_size is None
        order_fn, extra = self._order, ()
        if cfg.dp is not None:
            extra = dp.step_inputs(epoch_keys, masks, n_steps, self.batch, full, cfg.drop_last)
            if cfg.dp.sampling == "poisson":
                order_fn = partial(
                    dp.poisson_batches, batch=self.batch, full_batch=full, drop_last=cfg.drop_last
                )
        order, valid = jax.vmap(partial(order_fn, n_steps=n_steps))(epoch_keys, masks)
        step = self.map(self._step)
        epoch_g = jnp.full(len(masks), epoch, jnp.int32)

        def body(c, xs):
            idx, v, t, *e = xs
            aug = jax.vmap(lambda k: augment.step_key(k, epoch, t))(keys)
            return step(*c, params0, total_steps, epoch_g, aug, x[idx], y[idx], idx, v, *e), None

        steps = jnp.arange(n_steps, dtype=jnp.int32)
        xs = (order.swapaxes(0, 1), valid.swapaxes(0, 1), steps, *extra)
        carry, _ = lax.scan(body, carry, xs)
        return carry

    def _metrics(self, params, state, params0, x, y, with_el2n: bool):
        loss = self.cfg.loss

        def block(a, b):
            logits = self._apply(params, state, params0, self._features(a))[0]
            return per_example_metrics(logits, b, loss)

        out = tiled(block, x, y, EVAL_TILE)
        if not with_el2n:
            out.pop("el2n")
        return out

    def _record(self, params, state, params0, x, y) -> dict[str, jax.Array]:
        """Per-example metrics of every training example (and optionally gradient norms),
        in evaluation mode (BatchNorm's running averages); with ``keep_params`` also the
        parameters and state themselves."""
        rec = self._metrics(params, state, params0, x, y, with_el2n=True)
        if self.keep_params:
            rec.update(params=params, state=state)
        if self.cfg.record_grad_norm:

            def grad_sq(xi, yi):
                xi = self._features(xi[None])
                loss = lambda p: self._example_losses(p, state, params0, xi, yi[None])[0]  # noqa: E731
                return sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(jax.grad(loss)(params)))

            rec["grad_sq"] = tiled(lambda a, b: {"g": jax.vmap(grad_sq)(a, b)}, x, y, 128)["g"]
        return rec

    def run(self, keys, masks, x, y, xt, yt, n_steps: int, report: Callable | None = None):
        """Whole runs of a group of replicas: final metrics (and trajectories if recorded).

        ``report(steps)``, if given, is called after every epoch with the group's step
        counters (G,) int32, so that it runs once the epoch's updates are done."""
        cfg = self.cfg
        init_keys, data_keys = jax.vmap(_init_and_data_keys)(keys)
        params0, state0 = self.map(self.net.init)(init_keys)
        sizes = jnp.sum(masks, axis=1)
        if cfg.batch_size is None:
            steps_r = jnp.ones_like(sizes)
        else:
            steps_r = sizes // self.batch if cfg.drop_last else -(-sizes // self.batch)
        total_steps = cfg.epochs * steps_r
        g = len(keys)
        seen = Presentations(
            last=jnp.zeros((g, self.n), bool),
            events=jnp.zeros((g, self.n), jnp.int32),
            first=jnp.full((g, self.n), NEVER_PRESENTED, jnp.int32),
        )
        opt_state = self.map(self.opt.init)(params0)
        carry = Carry(params0, state0, opt_state, jnp.zeros(g, jnp.int32), seen)
        evaluated = self.opt.evaluated  # (params, opt_state) of a group -> evaluated params
        epoch_keys = jax.vmap(lambda k: jax.random.split(k, cfg.epochs))(data_keys).swapaxes(0, 1)
        epoch_ids = jnp.arange(cfg.epochs, dtype=jnp.int32)
        epoch = partial(
            self._epoch,
            params0=params0,
            total_steps=total_steps,
            x=x,
            y=y,
            keys=keys,
            masks=masks,
            n_steps=n_steps,
        )

        def epochs(c, keys_and_ids):
            def body(cc, ke):
                cc = epoch(cc, epoch_keys=ke[0], epoch=ke[1])
                if report is not None:
                    report(cc.steps)
                return cc, None

            return lax.scan(body, c, keys_and_ids)[0]

        traj = None
        if cfg.record_every:
            k = cfg.record_every
            t = cfg.epochs // k
            head = jax.tree.map(
                lambda v: v[: t * k].reshape(t, k, *v.shape[1:]), (epoch_keys, epoch_ids)
            )
            record = self.map(lambda p, st, p0: self._record(p, st, p0, x, y))

            def block(c, xs):
                c = epochs(c, xs)
                return c, record(evaluated(c.params, c.opt_state), c.state, params0)

            at_init = record(params0, state0, params0)  # epoch 0: the initialization
            carry, traj = lax.scan(block, carry, head)
            traj = jax.tree.map(
                lambda a, b: jnp.concatenate([a[:, None], b.swapaxes(0, 1)], axis=1), at_init, traj
            )  # (G, T, n), T = 1 + epochs // record_every
            carry = epochs(carry, (epoch_keys[t * k :], epoch_ids[t * k :]))
        else:
            carry = epochs(carry, (epoch_keys, epoch_ids))
        params, state = evaluated(carry.params, carry.opt_state), carry.state
        presentations = {"forgetting_events": carry.seen.events, "first_learned": carry.seen.first}

        def evaluate(a, b):
            def one(p, st, p0):
                out = self._metrics(p, st, p0, a, b, with_el2n=False)
                if cfg.queries != "none":  # LiRA's augmented queries: (n, K)
                    logits = lambda v: self._apply(p, st, p0, self._features(v))[0]  # noqa: E731
                    views = partial(query_margins, logits, queries=cfg.queries)
                    out["margin_views"] = tiled(
                        lambda xa, ya: {"m": views(xa, ya)}, a, b, EVAL_TILE
                    )["m"]
                return out

            return self.map(one)(params, state, params0)

        return evaluate(x, y), evaluate(xt, yt), traj, presentations


# Compiled chunk programs, bounded (see ``ProgramCache``): ``PROGRAMS.resize(n)``.
PROGRAMS = ProgramCache()
# Progress sinks of the train_replicas calls in flight, by the token their program reports.
_SINKS: dict[int, Callable[[int], None]] = {}
_TOKENS = itertools.count(1)


def _report(token: np.ndarray, count: np.ndarray, after: np.ndarray) -> None:
    """Host side of the progress callback: hand a group's finished replica-epochs to the
    sink of the call that runs it. ``after`` (the group's step counters, or its evaluated
    losses) is unused: it only makes the callback wait for the work it reports."""
    del after
    sink = _SINKS.get(int(token))
    if sink is not None and int(count):
        sink(int(count))


def _compiled_chunk_fn(
    spec,
    cfg,
    input_shape,
    num_classes,
    n,
    n_steps,
    group,
    strategy,
    devices,
    with_progress,
    standardize=None,
    keep_params=False,
):
    """The jitted chunk program, cached so successive chunks reuse one compilation. With
    ``with_progress`` every group reports its finished epochs to the host (``_report``);
    without it the program holds no callback at all. ``standardize``, ``keep_params``: see
    GroupProgram."""
    cache_key = (
        spec,
        cfg,
        tuple(input_shape),
        num_classes,
        n,
        n_steps,
        group,
        strategy,
        tuple(devices),
        with_progress,
        standardize,
        keep_params,
    )
    cached = PROGRAMS.get(cache_key)
    if cached is not None:
        return cached
    prog = GroupProgram(spec, cfg, input_shape, num_classes, n, strategy, standardize, keep_params)
    mesh = Mesh(np.array(devices), ("replica",))
    rep = PartitionSpec("replica")

    def local(keys, masks, real, token, x, y, xt, yt):
        """This device's replicas, one group after another; ``real`` (rows,) int32 is 1 for
        the chunk's replicas and 0 for padding rows, ``token`` names the progress sink."""

        g = keys.shape[0] // group
        # With at least as many groups on a device as epochs, one report per group (at its
        # end) already advances the bar more than once per epoch of the chunk; each report
        # costs a host round trip, so per-epoch reports are kept for few, wide groups.
        per_epoch = g < cfg.epochs

        def run_group(kmr):
            keys_g, masks_g, real_g = kmr
            count = jnp.sum(real_g)
            report = None
            if with_progress and per_epoch:
                report = partial(jax.debug.callback, _report, token, count)
            out = prog.run(keys_g, masks_g, x, y, xt, yt, n_steps=n_steps, report=report)
            if with_progress and not per_epoch:
                jax.debug.callback(_report, token, count * cfg.epochs, out[0]["loss"])
            return out

        out = lax.map(
            run_group,
            (
                keys.reshape(g, group, *keys.shape[1:]),
                masks.reshape(g, group, n),
                real.reshape(g, group),
            ),
        )
        return jax.tree.map(lambda v: v.reshape(g * group, *v.shape[2:]), out)

    whole = PartitionSpec()
    fn = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(rep, rep, rep, whole, whole, whole, whole, whole),
        out_specs=rep,
        check_vma=False,
    )
    replicated = NamedSharding(mesh, whole)
    sharded = NamedSharding(mesh, rep)
    return PROGRAMS.put(cache_key, jax.jit(fn, in_shardings=(sharded,) * 3 + (replicated,) * 5))


def standardization(ds: Dataset) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """GroupProgram's ``standardize`` for ``ds`` (hashable: it keys the program cache)."""
    stats = ds.channel_stats
    return None if stats is None else tuple(tuple(float(v) for v in a) for a in stats)


def _check_inputs(ds: Dataset, masks: np.ndarray, replica_ids: np.ndarray) -> None:
    if masks.ndim != 2 or masks.shape[1] != ds.n_train:
        raise ConfigError(
            f"masks must have shape (replicas, {ds.n_train}) for this dataset, got {masks.shape}"
        )
    if masks.dtype != bool:
        raise DataTypeError(f"masks must be boolean, got {masks.dtype}")
    empty = np.flatnonzero(~masks.any(axis=1))
    if len(empty):
        raise ConfigError(f"replica(s) {replica_ids[empty][:5].tolist()} have an empty subset")
    if replica_ids.shape != (len(masks),):
        raise ConfigError(
            f"replica_ids must have one id per mask row ({len(masks)}), "
            f"got shape {replica_ids.shape}"
        )
    if len(np.unique(replica_ids)) != len(replica_ids) or (replica_ids < 0).any():
        raise ConfigError("replica_ids must be distinct non-negative integers")


def _train(
    spec: Spec,
    ds: Dataset,
    masks: np.ndarray,
    cfg: TrainConfig,
    seed: int,
    replica_ids: np.ndarray | None,
    devices: list | None,
    max_subset_size: int | None,
    pad_to: int | None,
    progress: Callable[[int], None] | None,
    keep_params: bool = False,
) -> tuple[ReplicaOutputs, dict | None]:
    """``train_replicas``' run: its outputs and, with ``keep_params``, the recorded
    trajectory's parameters and states (leaves (R, T, ...)); None without."""
    masks = np.asarray(masks)
    ids = np.arange(len(masks)) if replica_ids is None else np.asarray(replica_ids, np.int64)
    _check_inputs(ds, masks, ids)
    check_training(spec, ds, cfg)
    check_queries(cfg.queries, ds.input_shape)
    devices = list(devices or jax.local_devices())
    n = ds.n_train
    group = cfg.group_size or auto_group_size(spec, ds, cfg)
    strategy = replica_strategy(cfg)
    per_call = group * len(devices)
    n_pad = -(-max(len(masks), pad_to or 0) // per_call) * per_call
    pad_rows = np.concatenate([np.arange(len(masks)), np.zeros(n_pad - len(masks), np.int64)])
    largest = int(masks.sum(axis=1).max())
    if max_subset_size is not None and max_subset_size < largest:
        raise ConfigError(f"max_subset_size {max_subset_size} < largest subset {largest}")
    n_steps = int(steps_per_epoch(max_subset_size or largest, cfg, n))
    standardize = standardization(ds)
    fn = _compiled_chunk_fn(
        spec,
        cfg,
        ds.input_shape,
        ds.num_classes,
        n,
        max(n_steps, 1),
        group,
        strategy,
        devices,
        progress is not None,
        standardize,
        keep_params,
    )
    r = len(masks)
    token = 0
    if progress is not None:
        token = next(_TOKENS) % 2**31
        _SINKS[token] = progress
    try:
        train, test, traj, presentations = fn(
            replica_keys(seed, ids[pad_rows]),
            jnp.asarray(masks[pad_rows]),
            jnp.asarray(np.arange(n_pad) < r, jnp.int32),
            jnp.asarray(token, jnp.int32),
            jnp.asarray(ds.x_train),
            jnp.asarray(ds.y_train),
            jnp.asarray(ds.x_test),
            jnp.asarray(ds.y_test),
        )
        if progress is not None:  # every callback has run before the sink is forgotten
            jax.block_until_ready((train, test, traj, presentations))
            jax.effects_barrier()
    finally:
        _SINKS.pop(token, None)

    def host(v):
        return np.asarray(v)[:r]

    fields = {
        "replica_ids": ids,
        "train_correct": host(train["correct"]),
        "train_margin": host(train["margin"]),
        "train_loss": host(train["loss"]),
        "test_correct": host(test["correct"]),
        "test_margin": host(test["margin"]),
        "test_loss": host(test["loss"]),
        "forgetting_events": host(presentations["forgetting_events"]),
        "first_learned": host(presentations["first_learned"]),
    }
    if "margin_views" in train:
        fields["train_margin_views"] = host(train["margin_views"])
        fields["test_margin_views"] = host(test["margin_views"])
    kept = None
    if traj is not None:
        fields.update(
            traj_correct=host(traj["correct"]),
            traj_margin=host(traj["margin"]),
            traj_loss=host(traj["loss"]),
            traj_el2n=host(traj["el2n"]),
            traj_grad_sq=host(traj["grad_sq"]) if "grad_sq" in traj else None,
            record_epochs=cfg.recorded_epochs(),
            record_lr=cfg.recorded_learning_rates(),
        )
        if keep_params:
            kept = jax.tree.map(host, {"params": traj["params"], "state": traj["state"]})
    out = ReplicaOutputs(**fields)  # built once: ReplicaOutputs is immutable
    return out, kept


def train_replicas(
    spec: Spec,
    ds: Dataset,
    masks: np.ndarray,
    cfg: TrainConfig,
    *,
    seed: int = 0,
    replica_ids: np.ndarray | None = None,
    devices: list | None = None,
    max_subset_size: int | None = None,
    pad_to: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> ReplicaOutputs:
    """Train one replica per mask row on its own subset; evaluate all train and test examples.

    ``replica_ids`` (default ``0..R-1``) name the replicas: replica r's run depends only on
    (seed, r, masks[row of r]), never on which other replicas are trained alongside it.
    ``devices`` (default: all local devices) share the replica axis. ``max_subset_size`` and
    ``pad_to`` fix the compiled program's shapes across calls (a study passes the largest
    subset of all its replicas and its chunk size), so every chunk reuses one compilation.

    ``progress``, if given, is called during the computation, from a host thread the
    compiled program calls back into, with the number of replica-epochs just finished
    (int > 0): once per epoch for each group of replicas (or, when a device holds at least
    as many groups as there are epochs, once per group at its end), so the calls of one
    ``train_replicas`` add up to ``len(masks) * cfg.epochs`` by the time it returns.
    Groups on different devices call it concurrently, so it must be thread-safe and quick
    (the device waits for it). It changes no result; without it the program has no callback.
    """
    return _train(
        spec, ds, masks, cfg, seed, replica_ids, devices, max_subset_size, pad_to, progress
    )[0]


@dataclass
class Checkpoints:
    """Replicas' parameters and training states (pytrees, leaves (R, T, ...)) after each
    epoch of ``epochs`` (T,) (0 = initialization), the learning rate there
    (``learning_rates`` (T,)), and the outputs of the same runs."""

    params: Any
    state: Any
    epochs: np.ndarray
    learning_rates: np.ndarray
    outputs: ReplicaOutputs


def train_checkpoints(
    spec: Spec,
    ds: Dataset,
    masks: np.ndarray,
    cfg: TrainConfig,
    *,
    seed: int = 0,
    replica_ids: np.ndarray | None = None,
    max_subset_size: int | None = None,
) -> Checkpoints:
    """``train_replicas``' runs again, keeping the parameters at every recorded epoch
    (``cfg.record_every`` > 0): a replica is a function of (seed, id, mask), so these are
    the checkpoints of a study's own replicas (pass its seed, ids and max_subset_size).
    Memory: R x T copies of the parameters, on device and host."""
    if not cfg.record_every:
        raise ConfigError("train_checkpoints needs cfg.record_every > 0 (the checkpoint spacing)")
    out, kept = _train(
        spec,
        ds,
        masks,
        cfg,
        seed,
        replica_ids,
        devices=None,
        max_subset_size=max_subset_size,
        pad_to=None,
        progress=None,
        keep_params=True,
    )
    return Checkpoints(kept["params"], kept["state"], out.record_epochs, out.record_lr, out)
