"""Simulators recorded headlessly, with actions: what the ingest service's simulator source and rlsim share.

`envs` allow-lists Gymnasium env ids by family and makes them headless; `gymnasium` records episodes as
MP4 plus a safetensors file of the per-step arrays (what world models need besides pixels); `policies`
(and `scripted`, the MuJoCo arm controllers) choose the actions; `arrays` maps spaces to stored arrays;
`ingest` hands a recording to the shared ingest core (worldloom.video.ingest.IngestService) like an
upload; `settings` has the limits (GymnasiumLimits, re-exported here).
"""

from worldloom.sim.gymnasium import FRAME_ALIGNMENT, EpisodeRecording, record_episode, record_episodes
from worldloom.sim.settings import GymnasiumLimits

__all__ = ["FRAME_ALIGNMENT", "EpisodeRecording", "GymnasiumLimits", "record_episode", "record_episodes"]
