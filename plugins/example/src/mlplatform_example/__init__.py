"""An example mlplatform plugin: one component kind, one job, two config groups."""
