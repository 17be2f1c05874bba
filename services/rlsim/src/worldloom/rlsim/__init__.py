"""RL-sim service: agents that train inside a learned world model, on a budget of real environment steps."""
