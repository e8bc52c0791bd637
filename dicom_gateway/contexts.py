"""Which SOP classes we process and which transfer syntaxes we accept (and can decode)."""

from __future__ import annotations

from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AllStoragePresentationContexts, VerificationPresentationContexts
from pynetdicom.presentation import PresentationContext, build_context

#: Image storage SOP classes a medseg model can consume.
PROCESSED_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.6.1": "Ultrasound Image Storage",
    "1.2.840.10008.5.1.4.1.1.3.1": "Ultrasound Multi-frame Image Storage",
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.1": "Computed Radiography Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
    # Not processed as a study: a reviewer's corrected segmentation (dicom_gateway.corrections).
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation Storage",
}

#: Uncompressed plus the compressed syntaxes pydicom + pylibjpeg decode.
ACCEPTED_TRANSFER_SYNTAXES: list[str] = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]


def supported_contexts() -> list[PresentationContext]:
    """Every storage SOP class (so unknown ones get an explicit C-STORE refusal) + Verification.

    A class we do not process is still negotiated: the sender then receives status 0122
    (SOP Class not supported) with a reason, instead of a silent context rejection.
    """
    contexts = [
        build_context(str(cx.abstract_syntax), ACCEPTED_TRANSFER_SYNTAXES)
        for cx in AllStoragePresentationContexts
    ]
    contexts.extend(VerificationPresentationContexts)
    return contexts
