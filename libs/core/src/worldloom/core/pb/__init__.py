"""Generated protobuf modules (do not edit; see worldloom.core.protogen)."""
