"""Private: the lean receive path that replaces parts of pynetdicom 3.0.4 (see README.md).

Nothing outside ``dicom_gateway`` imports it; ``dicom_gateway.server`` installs it when
``MEDSEG_FAST_RECEIVE`` is on.
"""
