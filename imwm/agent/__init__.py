"""DreamerV3 behaviour: actor and critic networks, imagination, the agent and its acting policy.

- :class:`Actor`, :class:`Critic` — networks (unimix categorical policy, two-hot critic)
- :func:`imagine` — tensor-level latent imagination ``[N, H+1]``
- :class:`DreamerAgent` — world model + actor + critic + losses + optimisers, ``train_step``
- :mod:`imwm.agent.optimization` — the optimisers and the guarded step (backward, clipping, non-finite guard)
- :class:`DreamerPolicy` — recurrent acting policy for TorchRL's ``Collector``
"""

from imwm.agent.actor import Actor
from imwm.agent.critic import Critic
from imwm.agent.dreamer import DreamerAgent
from imwm.agent.imagine import imagine
from imwm.agent.policy import DreamerPolicy

__all__ = ["Actor", "Critic", "DreamerAgent", "DreamerPolicy", "imagine"]
