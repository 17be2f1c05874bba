"""The embedded demo behind `make demo` (`worldloom demo`): every service in one process on real videos.

Modules, in the order the demo runs them: ``command`` (the CLI command), ``pipeline`` (stages 1-3:
ingest, curate, search, and the report), ``tokenizer_stage`` (4), ``world_stage`` (5), ``posttrain_stage`` (6),
``rl_stage`` (7); ``clips``
(curated clips and progress waits both stages read) and ``plots`` (matplotlib charts, GIF grids).
"""
