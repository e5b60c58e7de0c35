"""Devices and processes: data-parallel training on one host or several.

One device runs the steps under plain `jax.jit`. Several (local, or across processes
after `jax.distributed.initialize()`) run the same pure steps in one of two modes
(`train.parallel`):
  - 'jit' (the default): a `Mesh` of all devices with one axis, 'data'. Batches are
    global arrays sharded on it (`jax.make_array_from_process_local_data`: each process
    gives its own rows), parameters and optimizer state are replicated (`NamedSharding`
    with `PartitionSpec()`), and the step is jitted with those in/out shardings: XLA
    inserts the gradient all-reduce. The step sees the global batch, so it computes what
    one device computes (dropout masks included).
  - 'pmap': `jax.pmap` over the local devices, gradients and metric sums summed over a
    named axis (`steps.train_step` with `axis_name`); each device draws its own dropout
    masks. Kept for the design card and for comparison; since JAX 0.8 `pmap` itself runs
    on `jit` + `shard_map` and is in maintenance mode.
Each process feeds its local devices with its own rows of every global batch, and every
process runs the same program in the same order.

Several processes start, agree and check each other in `multihost.py`; its names that
the package uses are reachable from here too (`distributed.main_first`, ...).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from seq2seq_jax.train.multihost import (
  DistributedError,
  agree_to_stop,
  check_same,
  detected_cluster,
  initialize,
  main_decides,
  main_first,
  values_crc,
)

__all__ = [  # this module's and, re-exported, multihost's
  'MODES',
  'PMAP_AXIS',
  'Devices',
  'DistributedError',
  'agree_to_stop',
  'check_same',
  'detected_cluster',
  'initialize',
  'main_decides',
  'main_first',
  'resolve_mode',
  'values_crc',
]

MODES = ('auto', 'jit', 'pmap')  # train.parallel; 'auto' is 'jit'
PMAP_AXIS = 'batch'  # the named axis the psums of a pmapped step sum over


def resolve_mode(mode: str) -> str:
  mode = str(mode or 'auto').lower()
  if mode not in MODES:
    raise DistributedError(f'train.parallel must be one of {MODES}, got {mode!r}')
  return 'jit' if mode == 'auto' else mode


@dataclasses.dataclass(frozen=True)
class Devices:
  """How steps are laid out: plain `jit` on one device; over several, `jit` with
  shardings on a one-axis mesh (`mode='jit'`) or `pmap` (`mode='pmap'`).

  `count` is this process's devices; the global batch is split evenly over
  `count * process_count` devices, each process taking its rows (the `Batcher` shard).
  """

  count: int
  process_index: int = 0
  process_count: int = 1
  mode: str = 'pmap'
  member_shards: int = 1  # 'jit' mode: a population's members split over this many groups

  def __post_init__(self) -> None:
    if self.member_shards < 1 or self.total % self.member_shards:
      raise DistributedError(
        f'population.member_shards={self.member_shards} does not divide the {self.total} device(s)'
      )
    if self.member_shards > 1 and self.mode != 'jit':
      raise DistributedError("population.member_shards > 1 needs train.parallel='jit'")

  @classmethod
  def current(cls, mode: str = 'auto', member_shards: int = 1) -> Devices:
    return cls(
      jax.local_device_count(),
      jax.process_index(),
      jax.process_count(),
      resolve_mode(mode),
      member_shards,
    )

  def describe(self) -> str:
    """'1 device(s)', '8 device(s), jit with shardings' or '8 device(s), pmap'."""
    if not self.parallel:
      return f'{self.total} device(s)'
    how = 'jit with shardings' if self.mode == 'jit' else 'pmap'
    if self.member_shards > 1:
      how += f', members over {self.member_shards} device groups'
    return f'{self.total} device(s), {how}'

  @property
  def sharded(self) -> bool:
    """Several devices in the 'jit' mode (global arrays on a mesh)."""
    return self.parallel and self.mode == 'jit'

  @property
  def pmapped(self) -> bool:
    """Several devices in the 'pmap' mode ([local devices, ...] arrays)."""
    return self.parallel and self.mode == 'pmap'

  @functools.cached_property
  def mesh(self) -> Mesh:
    """All devices of all processes on one axis, 'data' (the 'jit' mode); with
    `member_shards` > 1 on two, ('members', 'data'): a population's members are split
    over the first, every member's batch over the second."""
    devices = np.asarray(jax.devices())
    if self.member_shards > 1:
      return Mesh(devices.reshape(self.member_shards, -1), ('members', 'data'))
    return Mesh(devices, ('data',))

  @property
  def member_sharding(self) -> NamedSharding:
    """A population's stacked leaves split on their leading (members) axis."""
    return NamedSharding(self.mesh, PartitionSpec('members'))

  def place_members(self, tree: Any) -> Any:
    """Stacked `[members, ...]` host values -> global arrays split over the 'members'
    axis (each process fills the shards its devices hold); replicated without it."""
    if self.member_shards == 1:
      return self.replicate(tree)

    def put(x: np.ndarray) -> jax.Array:
      return jax.make_array_from_callback(x.shape, self.member_sharding, lambda i: x[i])

    return jax.tree.map(functools.partial(_place, put), tree)

  @property
  def batch_sharding(self) -> NamedSharding:
    """Rows split over the 'data' axis."""
    return NamedSharding(self.mesh, PartitionSpec('data'))

  @property
  def replicated(self) -> NamedSharding:
    """A full copy on every device."""
    return NamedSharding(self.mesh, PartitionSpec())

  @property
  def total(self) -> int:
    """Devices over all processes."""
    return self.count * self.process_count

  @property
  def parallel(self) -> bool:
    return self.total > 1

  @property
  def is_main(self) -> bool:
    """Process 0: the one that writes logs, metrics, plots and vocabularies."""
    return self.process_index == 0

  def check_divides(self, name: str, batch_size: int) -> None:
    """A clear error when a global batch does not split evenly over the devices."""
    if batch_size % self.total:
      raise DistributedError(
        f'{name}={batch_size} does not divide over {self.total} devices '
        f'({self.process_count} process(es) x {self.count}); use a multiple of {self.total}'
      )

  def shard(self, batch: dict[str, np.ndarray]) -> Any:
    """This process's rows of a batch -> under pmap [local devices, rows / devices, ...];
    in the 'jit' mode one global array per leaf, its rows split over the mesh."""
    if not self.parallel:
      return batch

    def split(x: np.ndarray) -> Any:
      if x.shape[0] % self.count:
        raise DistributedError(
          f'a batch of {x.shape[0]} rows does not split over {self.count} local devices'
        )
      if self.sharded:
        return jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(x))
      return x.reshape((self.count, -1) + x.shape[1:])

    return jax.tree.map(split, batch)

  def replicate(self, tree: Any) -> Any:
    """One copy of every leaf on each device: under pmap [local devices, ...] arrays; in
    the 'jit' mode global arrays with the replicated sharding (every process passes the
    same values)."""
    if not self.parallel:
      return tree
    if self.sharded:

      def put(x: Any) -> jax.Array:
        if isinstance(x, jax.Array) and x.sharding == self.replicated:
          return x  # already a replicated global array (restored so)
        return _place(lambda v: jax.make_array_from_process_local_data(self.replicated, v), x)

      return jax.tree.map(put, tree)
    devices = jax.local_devices()
    sharding = NamedSharding(Mesh(np.asarray(devices), ('devices',)), PartitionSpec('devices'))

    def put(x: Any) -> jax.Array:
      x = np.asarray(jax.device_get(x))
      return jax.device_put(np.broadcast_to(x, (len(devices),) + x.shape), sharding)

    return jax.tree.map(put, tree)

  def restore_target(self, tree: Any) -> Any:
    """What Orbax restores a state into: in the 'jit' mode the shapes with the replicated
    sharding (each process reads the checkpoint into its devices: no host copy to place
    afterwards); otherwise the tree itself (host or one-device arrays)."""
    if not self.sharded:
      return tree
    return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=self.replicated), tree
    )

  def broadcast(self, tree: Any) -> Any:
    """Values every device reads whole (keys, learning rates): replicated global arrays in
    the 'jit' mode; as they are otherwise (pmap broadcasts them with `in_axes=None`)."""
    return self.replicate(tree) if self.sharded else tree

  def unreplicate(self, tree: Any) -> Any:
    """This process's first copy (read from its own buffer: no cross-device gather)."""
    if not self.parallel:
      return tree

    def first(x: Any) -> Any:
      if self.sharded:
        if not isinstance(x, jax.Array) or x.is_fully_replicated:
          return x.addressable_shards[0].data if isinstance(x, jax.Array) else x
        if x.is_fully_addressable:  # split over members, all on this process's devices
          return x
        return multihost_utils.process_allgather(x, tiled=True)
      if isinstance(x, jax.Array):
        return x.addressable_shards[0].data[0]
      return x[0]

    return jax.tree.map(first, tree)

  def compile(
    self,
    fn: Callable[..., Any],
    roles: tuple[str, ...],
    donate: tuple[int, ...] = (),
    out_roles: tuple[str, ...] | None = None,
  ) -> Callable[..., Any]:
    """`fn` compiled for these devices. `roles` names each argument: 'state' (parameters,
    optimizer state: replicated), 'batch' (rows split over the devices), 'shared' (the
    same small value everywhere: keys, rates) or 'members' (a population's stacked
    values, split over the mesh's 'members' axis). `fn` takes `axis_name`: 'batch' under
    pmap (its psums sum over the devices), None otherwise (under jit with shardings XLA
    adds the all-reduce). Outputs are replicated, or per `out_roles` (one per output);
    `donate` argument buffers are reused."""
    bad = (set(roles) | set(out_roles or ())) - {'state', 'batch', 'shared', 'members'}
    if bad:
      raise ValueError(f'unknown argument roles {sorted(bad)}')
    if 'members' in roles and not self.sharded:
      raise ValueError("the 'members' role needs the jit mode on several devices")
    if self.pmapped:
      axes = tuple(None if r == 'shared' else 0 for r in roles)
      return jax.pmap(
        functools.partial(fn, axis_name=PMAP_AXIS),
        axis_name=PMAP_AXIS,
        in_axes=axes,
        donate_argnums=donate,
      )
    fn = functools.partial(fn, axis_name=None)
    if not self.sharded:
      return jax.jit(fn, donate_argnums=donate)

    def sharding(role: str) -> NamedSharding:
      if role == 'batch':
        return self.batch_sharding
      return self.member_sharding if role == 'members' else self.replicated

    outs = tuple(map(sharding, out_roles)) if out_roles else self.replicated
    return jax.jit(
      fn,
      in_shardings=tuple(map(sharding, roles)),
      out_shardings=outs,
      donate_argnums=donate,
    )


def _place(put: Callable[[np.ndarray], jax.Array], x: Any) -> jax.Array:
  """`put` of a leaf's host value; a typed PRNG key travels as its key data."""
  if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    return jax.random.wrap_key_data(
      _place(put, jax.random.key_data(x)), impl=jax.random.key_impl(x)
    )
  return put(np.asarray(jax.device_get(x)))
