"""Environments: Atari (ale-py vector env or TorchRL ``GymEnv``), gymnasium envs, and
synthetic tasks: the sparse-reward chain (registered as ``imwm/SparseChain-v0`` and
``imwm/SparseChainPixels-v0`` on import), the 64x64 pixel game Catch (``imwm/Catch-v0``) and
videos with known segment boundaries: Moving Shapes and the one-change-per-kind family
(``imwm.envs.boundary_videos``: appearance, dynamics, scene_cut), picked by name in
``imwm.envs.boundary_data``.
"""
from imwm.envs.ale_vector import AleVectorEnv
from imwm.envs.atari import atari_gym_id, atari_tasks, make_atari_env
from imwm.envs.factory import make_env
from imwm.envs.gym_vector import make_gym_env
from imwm.envs.resize import ResizeFrames, resize_frames
from imwm.envs import catch, sparse_chain  # noqa: F401  (register the gymnasium ids)

__all__ = [
    "AleVectorEnv",
    "ResizeFrames",
    "atari_gym_id",
    "atari_tasks",
    "make_atari_env",
    "make_env",
    "make_gym_env",
    "resize_frames",
]
