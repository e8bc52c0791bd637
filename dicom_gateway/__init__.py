"""medseg DICOM gateway: C-STORE/C-ECHO SCP, instance storage, series completion, job outbox."""
