"""A lean receive path for C-STORE requests, run in the association's DUL thread.

pynetdicom turns each P-DATA-TF PDU into PDU, PDV-item and primitive objects, copies every
fragment into a ``BytesIO``, decodes the command set with pydicom, hands the message to the
association thread and encodes the response as a pydicom data set again: about 4 ms of
Python per 512x512 CT instance, more than the work of storing it. For a C-STORE request on a
plain presentation context this module does the same job with byte slices:

* the PDV items of a P-DATA-TF PDU are split with ``struct`` (PS3.8 9.3.5);
* the command set (implicit VR little endian, PS3.7 6.3.1) is read element by element;
* the data set fragments are kept as ``memoryview`` slices of the received PDUs: the handler
  writes them to disk as they are (``encoded_parts``) and decodes the data set through them
  without reading large values such as the pixel data (each copy of 512 kB costs here);
* the EVT_C_STORE handler bound to the association is called with an event offering what
  pynetdicom's event offers our handler (``dataset``, ``encoded_dataset``, ``request``,
  ``context``, ``assoc``);
* the C-STORE response is encoded by hand and written to the socket.

Everything else (other DIMSE services, a command split over PDVs that isn't a C-STORE, a
deflated transfer syntax, a context ID that wasn't accepted, anything that doesn't parse)
goes to pynetdicom's DIMSE provider unchanged, exactly as its state machine would pass it.
"""

from __future__ import annotations

import bisect
import functools
import io
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, BinaryIO, cast

from pydicom import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian
from pynetdicom import evt

from dicom_gateway import statuses

logger = logging.getLogger(__name__)

_PDV_HEADER = struct.Struct(">IBB")  # item length, presentation context ID, control header
_ELEMENT = struct.Struct("<HHI")  # group, element, value length (implicit VR little endian)
_US = struct.Struct("<H")
_COMMAND_BIT = 0x01
_LAST_BIT = 0x02
_C_STORE_RQ = 0x0001
_C_STORE_RSP = 0x8001
_NO_DATA_SET = 0x0101
_UI_ELEMENTS = {0x0002: "AffectedSOPClassUID", 0x1000: "AffectedSOPInstanceUID"}
_US_ELEMENTS = {
    0x0100: "CommandField",
    0x0110: "MessageID",
    0x0700: "Priority",
    0x0800: "CommandDataSetType",
    0x1031: "MoveOriginatorMessageID",
}
_MAX_ERROR_COMMENT = 64
#: Values longer than this are skipped, not read, when the data set is decoded (the handler
#: only asks whether the pixel data is there).
DEFER_BYTES = 1 << 16

PDV = tuple[int, int, memoryview]  # context ID, message control header, fragment


class MalformedPDUError(ValueError):
    """The P-DATA-TF PDU's items don't add up to its length."""


def split_pdvs(body: memoryview) -> list[PDV]:
    """The presentation data value items of a P-DATA-TF PDU body (after its 6-byte header)."""
    items: list[PDV] = []
    offset = 0
    while offset < len(body):
        if len(body) - offset < _PDV_HEADER.size:
            raise MalformedPDUError("truncated PDV item header")
        length, context_id, control = _PDV_HEADER.unpack_from(body, offset)
        end = offset + 4 + length
        if length < 2 or end > len(body):
            raise MalformedPDUError("PDV item length outside the PDU")
        items.append((context_id, control, body[offset + 6 : end]))
        offset = end
    return items


def parse_command(data: bytes) -> dict[str, Any]:
    """The elements of a command set we act on, by keyword; ValueError when it won't parse."""
    values: dict[str, Any] = {}
    offset = 0
    while offset < len(data):
        group, element, length = _ELEMENT.unpack_from(data, offset)
        offset += _ELEMENT.size
        value = data[offset : offset + length]
        if group != 0 or len(value) != length:
            raise ValueError("not a command set")
        offset += length
        if element in _UI_ELEMENTS:
            values[_UI_ELEMENTS[element]] = value.decode("ascii").rstrip("\0 ")
        elif element in _US_ELEMENTS and length == 2:
            values[_US_ELEMENTS[element]] = _US.unpack(value)[0]
        elif element == 0x1030:
            values["MoveOriginatorApplicationEntityTitle"] = value.decode("ascii").strip()
    return values


def _element(element: int, value: bytes) -> bytes:
    return _ELEMENT.pack(0, element, len(value)) + value


def _padded(text: str, pad: bytes) -> bytes:
    raw = text.encode("ascii", "replace")
    return raw + pad if len(raw) % 2 else raw


def encode_store_response(command: dict[str, Any], status: int, comment: str | None) -> bytes:
    """A C-STORE-RSP command set (PS3.7 9.3.1.2), implicit VR little endian."""
    elements = [
        _element(0x0002, _padded(command["AffectedSOPClassUID"], b"\0")),
        _element(0x0100, _US.pack(_C_STORE_RSP)),
        _element(0x0120, _US.pack(command["MessageID"])),
        _element(0x0800, _US.pack(_NO_DATA_SET)),
        _element(0x0900, _US.pack(status)),
    ]
    if comment:
        elements.append(_element(0x0902, _padded(comment[:_MAX_ERROR_COMMENT], b" ")))
    elements.append(_element(0x1000, _padded(command["AffectedSOPInstanceUID"], b"\0")))
    body = b"".join(elements)
    return _element(0x0000, struct.pack("<I", len(body))) + body


def p_data_pdu(context_id: int, command: bytes) -> bytes:
    """One P-DATA-TF PDU carrying a whole command set in one PDV (last command fragment)."""
    item = _PDV_HEADER.pack(len(command) + 2, context_id, _COMMAND_BIT | _LAST_BIT) + command
    return struct.pack(">BBI", 0x04, 0x00, len(item)) + item


@dataclass(frozen=True)
class _Context:
    """What handlers read from ``event.context``."""

    context_id: int
    abstract_syntax: str
    transfer_syntax: str


class StoreEvent:
    """The parts of pynetdicom's EVT_C_STORE event our store handler uses."""

    event = evt.EVT_C_STORE

    def __init__(
        self, assoc: Any, context: _Context, command: dict[str, Any], parts: list[memoryview]
    ) -> None:
        self.assoc = assoc
        self.context = context
        self._command = command
        self._parts = parts
        self._encoded: bytes | None = None
        self._dataset: Dataset | None = None

    @functools.cached_property
    def request(self) -> SimpleNamespace:
        """The C-STORE-RQ's attributes by keyword, as pynetdicom's ``C_STORE`` offers them."""
        return SimpleNamespace(**self._command)

    def encoded_parts(self) -> list[memoryview]:
        """The data set as received, fragment by fragment (slices of the PDUs, no copy)."""
        return self._parts

    def encoded_dataset(self, include_meta: bool = False) -> bytes:
        if include_meta:
            raise NotImplementedError("the gateway writes its own file meta")
        if self._encoded is None:
            self._encoded = b"".join(self._parts)
        return self._encoded

    @property
    def dataset(self) -> Dataset:
        """The data set, decoded lazily as pynetdicom's event decodes it, except that values
        longer than ``DEFER_BYTES`` (the pixel data) are present but not read: reading one
        raises, as it would for a deferred value of a file that is gone."""
        if self._dataset is None:
            syntax = self.context.transfer_syntax
            self._dataset = read_dataset(
                cast(BinaryIO, PartsReader(self._parts)),
                syntax == ImplicitVRLittleEndian,
                syntax != ExplicitVRBigEndian,
                defer_size=DEFER_BYTES,
            )
        return self._dataset


class PartsReader(io.RawIOBase):
    """A read-only, seekable binary stream over byte fragments, without joining them."""

    def __init__(self, parts: list[memoryview]) -> None:
        super().__init__()
        self._parts = parts
        self._starts: list[int] = []
        total = 0
        for part in parts:
            self._starts.append(total)
            total += len(part)
        self._size = total
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        end = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        if end <= self._pos:
            return b""
        index = bisect.bisect_right(self._starts, self._pos) - 1
        pieces = []
        while self._pos < end:
            part, start = self._parts[index], self._starts[index]
            piece = part[self._pos - start : min(len(part), end - start)]
            pieces.append(piece)
            self._pos += len(piece)
            index += 1
        return bytes(pieces[0]) if len(pieces) == 1 else b"".join(pieces)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@dataclass
class FastStore:
    """Per-association state: which PDVs we answer ourselves and which go to pynetdicom.

    ``send`` writes bytes to the peer; ``forward`` passes PDVs to pynetdicom's DIMSE provider.
    """

    assoc: Any
    send: Callable[[bytes], None]
    forward: Callable[[list[PDV]], None]
    _contexts: dict[int, _Context] = field(default_factory=dict)
    _command_pdvs: list[PDV] = field(default_factory=list)
    _owner: str | None = None  # None between messages, "fast" or "pynetdicom" within one
    _command: dict[str, Any] = field(default_factory=dict)
    _context: _Context | None = None
    _parts: list[memoryview] = field(default_factory=list)

    def __post_init__(self) -> None:
        for cx in self.assoc.accepted_contexts:
            self._contexts[cx.context_id] = _Context(
                cx.context_id, str(cx.abstract_syntax), str(cx.transfer_syntax[0])
            )

    @property
    def within_message(self) -> bool:
        """A message has begun on the fast path (its PDVs must all come here)."""
        return self._owner is not None or bool(self._command_pdvs)

    def receive(self, pdvs: list[PDV]) -> None:
        forward: list[PDV] = []
        for pdv in pdvs:
            self._take(pdv, forward)
        if forward:
            self.forward(forward)

    def _take(self, pdv: PDV, forward: list[PDV]) -> None:
        context_id, control, data = pdv
        if self._owner == "fast":
            if control & _COMMAND_BIT or self._context is None:
                raise MalformedPDUError("command fragment inside a data set")
            if context_id != self._context.context_id:
                raise MalformedPDUError("data set fragment on another presentation context")
            self._parts.append(data)
            if control & _LAST_BIT:
                self._complete()
            return
        if self._owner == "pynetdicom":
            forward.append(pdv)
            if control & _LAST_BIT and not control & _COMMAND_BIT:
                self._owner = None  # its data set is complete
            return
        # Between messages: gather the command; decide once it is whole.
        if not control & _COMMAND_BIT:
            forward.append(pdv)  # pynetdicom reports the protocol error
            return
        self._command_pdvs.append(pdv)
        if not control & _LAST_BIT:
            return
        pdvs, self._command_pdvs = self._command_pdvs, []
        command = _parse_fragments(pdvs)
        if command is not None and self._eligible(command, pdvs):
            self._owner, self._command, self._parts = "fast", command, []
            self._context = self._contexts[context_id]
            return
        forward.extend(pdvs)
        if command is None or command.get("CommandDataSetType") != _NO_DATA_SET:
            self._owner = "pynetdicom"  # its data set follows

    def _eligible(self, command: dict[str, Any], pdvs: list[PDV]) -> bool:
        """Whether we answer it ourselves: a C-STORE-RQ with a data set, on an accepted,
        non-deflated context of its own SOP class, with a handler bound."""
        context_id = pdvs[0][0]
        context = self._contexts.get(context_id)
        return not (
            context is None
            or any(pdv[0] != context_id for pdv in pdvs)
            or command.get("CommandField") != _C_STORE_RQ
            or command.get("CommandDataSetType", _NO_DATA_SET) == _NO_DATA_SET
            or "MessageID" not in command
            or not command.get("AffectedSOPInstanceUID")
            or command.get("AffectedSOPClassUID") != context.abstract_syntax
            or context.transfer_syntax == DeflatedExplicitVRLittleEndian
            or not self.assoc.get_handlers(evt.EVT_C_STORE)
        )

    def _complete(self) -> None:
        assert self._context is not None
        event = StoreEvent(self.assoc, self._context, self._command, self._parts)
        command, context = self._command, self._context
        self._owner, self._command, self._context, self._parts = None, {}, None, []
        status, comment = self._call_handler(event)
        response = encode_store_response(command, status, comment)
        self.send(p_data_pdu(context.context_id, response))

    def _call_handler(self, event: StoreEvent) -> tuple[int, str | None]:
        handler, args = self.assoc.get_handlers(evt.EVT_C_STORE)
        try:
            result = handler(event, *(args or []))
        except Exception:
            logger.exception("exception in the C-STORE handler")
            return statuses.HANDLER_FAILED, "exception in the storage handler"
        if isinstance(result, Dataset):
            comment = result.get("ErrorComment")
            return int(result.Status), str(comment) if comment else None
        return int(result), None


def _parse_fragments(pdvs: list[PDV]) -> dict[str, Any] | None:
    """The command set carried by ``pdvs``, or None when it doesn't parse."""
    try:
        return parse_command(b"".join(pdv[2] for pdv in pdvs))
    except (ValueError, struct.error, UnicodeDecodeError):
        return None
