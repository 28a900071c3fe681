"""The pipeline that composes the stages: pruning in parts, allocation chosen by measurement, pruning in steps."""
