"""The ingest service's simulator source: `jobs` runs recording requests in the background with progress kept
in the store. The simulators themselves (env allow-list, recorder, policies, limits) are worldloom.sim, shared
with rlsim; the HTTP routes are in `worldloom.ingest.app`, request and job shapes in `worldloom.ingest.schemas`.
"""
