"""VFPN's training-time knobs for its vertical branch: a staged start and its own weight decay.

The generic update step (`det_model_fn._train_op`) calls `gate_branch_update` once, and the L2
term (`det_model_fn.reg_l2_loss`) calls `branch_weight_decay`; both leave the graph exactly as
BiFPN's would be when their hparams are at their defaults, which train the branch with the rest
of the network from step 0. The knobs stay for ablations (benchmarks/results_learning.md,
"Ablation"): they did no better than the defaults there.

- `vfpn_branch_start`, `vfpn_branch_warmup` (fractions of the run's steps): the branch is held
  at its initial values until the start (a zero-initialised VFPN then trains exactly as BiFPN),
  then its updates ramp from 0 to full.
- `vfpn_branch_weight_decay_scale`: multiplies weight decay for the branch's kernels.
"""

from __future__ import annotations

import inspect
from typing import Callable, List, Sequence, Tuple

import tensorflow as tf

import vfpn
from hparams_config import Config

tf1 = tf.compat.v1

GradsAndVars = List[Tuple[tf.Tensor, tf.Variable]]
AfterApply = Callable[[tf.Operation], tf.Operation]

# (beta1, beta2) of tf1.train.AdamOptimizer as det_model_fn builds it (with its defaults): the
# branch's own bias correction must use the optimizer's.
ADAM_BETAS = tuple(inspect.signature(tf1.train.AdamOptimizer.__init__).parameters[name].default
                   for name in ("beta1", "beta2"))


def branch_variables(variables: Sequence[tf.Variable]) -> List[tf.Variable]:
    """The variables of VFPN's vertical stage (scope `vfpn.VERTICAL_SCOPE`) among `variables`."""
    prefix = vfpn.VERTICAL_SCOPE + "/"
    return [v for v in variables
            if v.op.name.startswith(prefix) or f"/{prefix}" in v.op.name]


def branch_steps(config: Config, total_steps: int) -> Tuple[int, int]:
    """(first step that updates the branch, steps its update ramps over) in a run of
    `total_steps` steps. The ramp ends by the run's last step, as validate's rule
    vfpn_branch_start + vfpn_branch_warmup <= 1 promises, whichever way the two round."""
    start = int(round(config.vfpn_branch_start * total_steps))
    return start, min(int(round(config.vfpn_branch_warmup * total_steps)), total_steps - start)


def branch_update_scale(config: Config, total_steps: int, global_step: tf.Tensor
                        ) -> Tuple[tf.Tensor, tf.Tensor]:
    """(active, scale) for the update the branch gets at `global_step`.

    Before `vfpn_branch_start` `active` is False: the branch's gradients are zeroed, so it stays
    at its initial values and, with the zero-initialised last BN, VFPN computes what BiFPN does
    and takes BiFPN's steps up to float rounding (the branch's zero terms can change the order
    of the cells' gradient sums). From then on the update is multiplied by `scale`, a linear
    ramp from 1/W to 1 over W = `vfpn_branch_warmup` steps. With Adam, `scale` also swaps the
    run's bias correction (for step t = global_step + 1) for the one of the branch's own step
    count, so the branch's fresh moments are corrected as if it had trained from step 0 (else
    its first steps after a late start are several times too large).
    """
    start, warm = branch_steps(config, total_steps)
    step = tf.cast(global_step, tf.float32)
    active = step >= start
    own = tf.maximum(step - start + 1.0, 1.0)  # the branch's own step count, from 1
    scale = tf.minimum(own / float(max(1, warm)), 1.0)
    if config.optimizer == "adam":
        beta1, beta2 = ADAM_BETAS

        def correction(t):
            return tf.sqrt(1.0 - tf.pow(beta2, t)) / (1.0 - tf.pow(beta1, t))

        scale = scale * correction(own) / correction(step + 1.0)
    return active, tf.where(active, scale, 0.0)


def gate_branch_update(grads_and_vars: GradsAndVars, config: Config, total_steps: int,
                       global_step: tf.Tensor) -> Tuple[GradsAndVars, AfterApply]:
    """The branch's staged update, around the optimizer's `apply_gradients`.

    Returns the gradients to apply (the branch's zeroed while it waits) and the function to call
    on the apply op: it scales the branch's update by `branch_update_scale`, blending each
    branch variable between its value before the step and the optimizer's new value. Without a
    branch, or with both knobs at 0, the gradients are returned as they are with an identity.
    """
    branch = {id(v) for v in branch_variables([v for _, v in grads_and_vars])}
    if not branch or not (config.vfpn_branch_start > 0 or config.vfpn_branch_warmup > 0):
        return grads_and_vars, lambda train_op: train_op
    active, scale = branch_update_scale(config, total_steps, global_step)
    tf1.summary.scalar("vfpn_branch_update_scale", scale)
    gated, before = [], []
    for g, v in grads_and_vars:
        if id(v) in branch and g is not None:
            old = tf.identity(v.read_value())
            before.append((v, old))
            # Zeroed (not dropped) gradients keep Adam's moments of the branch at 0 until it
            # joins; the dependency makes the update of `v` wait for its snapshot `old`.
            with tf.control_dependencies([old]):
                g = tf.where(active, g, tf.zeros_like(g))
        gated.append((g, v))

    def blend(v: tf.Variable, old: tf.Tensor) -> tf.Operation:
        # new = old + scale * (optimizer's new - old): exact at scale 1, and at scale 0 (the
        # frozen steps) the branch keeps `old` exactly.
        new = v.read_value()
        return v.assign(tf.where(tf.equal(scale, 1.0), new, old + scale * (new - old)))

    def after_apply(train_op: tf.Operation) -> tf.Operation:
        with tf.control_dependencies([train_op]):
            return tf.group(*[blend(v, old) for v, old in before])

    return gated, after_apply


def branch_weight_decay(kernels: Sequence[tf.Variable], branch_scale: float
                        ) -> List[tf.Tensor]:
    """The L2 terms (`tf.nn.l2_loss`) of `kernels`, with the branch's summed and multiplied by
    `branch_scale` (hparam `vfpn_branch_weight_decay_scale`; 0 leaves them out)."""
    if branch_scale == 1.0:
        return [tf.nn.l2_loss(v) for v in kernels]
    branch = {id(v) for v in branch_variables(kernels)}
    terms = [tf.nn.l2_loss(v) for v in kernels if id(v) not in branch]
    if branch and branch_scale:
        terms.append(branch_scale * tf.add_n(
            [tf.nn.l2_loss(v) for v in kernels if id(v) in branch]))
    return terms
