"""Environments: Atari (ale-py vector env or TorchRL ``GymEnv``), gymnasium vector-obs envs."""
from imwm.envs.ale_vector import AleVectorEnv
from imwm.envs.atari import atari_gym_id, atari_tasks, make_atari_env
from imwm.envs.factory import make_env
from imwm.envs.gym_vector import make_gym_env
from imwm.envs.resize import ResizeFrames, resize_frames

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
