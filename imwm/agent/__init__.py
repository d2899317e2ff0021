"""DreamerV3 behaviour: actor and critic networks (more to come: imagination, agent, acting policy)."""

from imwm.agent.actor import Actor
from imwm.agent.critic import Critic

__all__ = ["Actor", "Critic"]
