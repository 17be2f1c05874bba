"""Sources that make videos instead of receiving them: simulators recorded headlessly, with actions.

`gymnasium` records episodes of Gymnasium environments as MP4 plus a safetensors file of the actions
(what world models need besides pixels); `ingest` hands each episode to IngestService like an upload;
`jobs` runs requests in the background with progress kept in the store. Their HTTP routes are in
`worldloom.ingest.app`, request and job shapes in `worldloom.ingest.schemas`, limits in
`worldloom.ingest.settings` (GymnasiumLimits, re-exported here).
"""

from worldloom.ingest.settings import GymnasiumLimits
from worldloom.ingest.sources.gymnasium import FRAME_ALIGNMENT, EpisodeRecording, record_episode, record_episodes

__all__ = ["FRAME_ALIGNMENT", "EpisodeRecording", "GymnasiumLimits", "record_episode", "record_episodes"]
