"""What both roles stand on: settings, errors, series tags, the model registry and routing, task
names and the broker contract, time limits, job enqueueing, path components and input retention.
Imports nothing from the rest of worker and nothing from dicom_gateway.
"""
