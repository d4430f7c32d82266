"""The zip container of PyTorch checkpoints (torch >= 1.6) and TorchScript archives.

Read from the central directory with bounded reads, never with `zipfile` (whose reads allocate
what a header claims). Every member is listed and checked (names confined to one top-level
folder, no duplicates, every member's bytes inside the file), but only the members asked for --
the pickles -- are ever read, so a checkpoint larger than memory costs a few small reads.
torch stores members uncompressed; a deflated member (TorchScript's code and debug pickles) is
inflated only when small. Layout: PKWARE APPNOTE 6.3 (sections 4.3.7, 4.3.12, 4.3.14-16, 4.5.3).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from modelyard.errors import InvalidModelFileError
from modelyard.inspect._bounded import ByteSource

MiB = 1024 * 1024
MAX_CENTRAL_DIRECTORY = 64 * MiB  # ~1.4 million members; a torch checkpoint has one per storage
MAX_INFLATED_MEMBER = 16 * MiB  # a compressed pickle member is read only up to this size
_DEFLATE_MAX_RATIO = 1032  # deflate cannot expand data by more than this

_END = struct.Struct("<4sHHHHIIH")
_END64_LOCATOR = struct.Struct("<4sIQI")
_END64 = struct.Struct("<4sQHHIIQQQQ")
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_END_SIGNATURE = b"PK\x05\x06"
_END64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_END64_SIGNATURE = b"PK\x06\x06"
_CENTRAL_SIGNATURE = b"PK\x01\x02"
_LOCAL_SIGNATURE = b"PK\x03\x04"
_ZIP64_EXTRA = 0x0001
_FLAG_ENCRYPTED = 0x1
_FLAG_UTF8 = 0x800
STORED, DEFLATED = 0, 8


@dataclass(frozen=True)
class ZipMember:
    """One central-directory entry."""

    name: str
    method: int
    flags: int
    crc: int
    compressed_size: int
    size: int
    header_offset: int


@dataclass(frozen=True)
class TorchZip:
    """A validated archive: its single top-level folder and its members by full name."""

    prefix: str
    members: dict[str, ZipMember]
    central_directory_offset: int

    def member(self, relative: str) -> ZipMember | None:
        """The member at `<prefix>/<relative>`, if any."""
        return self.members.get(f"{self.prefix}/{relative}")


@dataclass(frozen=True)
class _Directory:
    entries: int
    offset: int
    size: int
    limit: int  # where the end records start: the directory must end before it


def read_torch_zip(source: ByteSource) -> TorchZip:
    """List and validate every member of a torch zip archive (nothing but headers is read)."""
    directory = _find_directory(source)
    members = _read_members(source, directory)
    prefix = _single_top_folder(source, members)
    return TorchZip(prefix, members, directory.offset)


def open_member(source: ByteSource, archive: TorchZip, member: ZipMember) -> tuple[ByteSource, int, int]:
    """Where a member's bytes can be read: (source, offset, length). A stored member is read in
    place; a deflated one (only when small) is inflated into an in-memory source."""
    offset, length = _data_range(source, archive, member)
    if member.method == STORED:
        return source, offset, length
    if member.method != DEFLATED:
        raise _member_error(source, member, f"uses compression method {member.method}; torch stores members as is")
    if member.size > MAX_INFLATED_MEMBER or length > MAX_INFLATED_MEMBER + MiB:
        raise _member_error(
            source, member, f"is compressed and {member.size} bytes; modelyard inflates at most {MAX_INFLATED_MEMBER}"
        )
    data = _inflate(source, member, source.read(offset, length, f"zip member {_shown(member.name)}"))
    return ByteSource(BytesIO(data), len(data), source.name), 0, len(data)


def _find_directory(source: ByteSource) -> _Directory:
    tail_length = min(source.size, _END.size + 0xFFFF)
    tail_start = source.size - tail_length
    tail = source.read(tail_start, tail_length, "the zip end record")
    index = tail.rfind(_END_SIGNATURE)
    while index >= 0:
        if index + _END.size <= len(tail):
            fields = _END.unpack_from(tail, index)
            if index + _END.size + fields[7] == len(tail):  # the comment runs exactly to the end
                return _directory_from_end(source, tail_start + index, fields)
        index = tail.rfind(_END_SIGNATURE, 0, index)
    raise source.error("no zip end-of-central-directory record (truncated, or not a zip archive)")


def _directory_from_end(source: ByteSource, end_offset: int, fields: tuple[Any, ...]) -> _Directory:
    _, disk, directory_disk, disk_entries, entries, size, offset, _ = fields
    if disk != 0 or directory_disk != 0 or disk_entries != entries:
        raise source.error("is a multi-disk zip archive, which torch never writes")
    if end_offset >= _END64_LOCATOR.size:
        locator = source.read(end_offset - _END64_LOCATOR.size, _END64_LOCATOR.size, "the zip64 locator")
        if locator.startswith(_END64_LOCATOR_SIGNATURE):
            return _directory_from_end64(source, end_offset - _END64_LOCATOR.size, _END64_LOCATOR.unpack(locator)[2])
    if entries == 0xFFFF or size == 0xFFFFFFFF or offset == 0xFFFFFFFF:
        raise source.error("zip end record defers to a zip64 record that is missing")
    return _checked_directory(source, _Directory(entries, offset, size, end_offset))


def _directory_from_end64(source: ByteSource, locator_offset: int, record_offset: int) -> _Directory:
    if record_offset + _END64.size > locator_offset:
        raise source.error(f"zip64 end record offset {record_offset} is past its locator (corrupt)")
    record = _END64.unpack(source.read(record_offset, _END64.size, "the zip64 end record"))
    signature, _, _, _, disk, directory_disk, disk_entries, entries, size, offset = record
    if signature != _END64_SIGNATURE:
        raise source.error(f"no zip64 end record at offset {record_offset} (corrupt)")
    if disk != 0 or directory_disk != 0 or disk_entries != entries:
        raise source.error("is a multi-disk zip archive, which torch never writes")
    return _checked_directory(source, _Directory(entries, offset, size, record_offset))


def _checked_directory(source: ByteSource, directory: _Directory) -> _Directory:
    if directory.offset + directory.size > directory.limit:
        raise source.error(
            f"zip central directory claims bytes {directory.offset}..{directory.offset + directory.size} "
            f"but the end record starts at {directory.limit} (truncated or corrupt)"
        )
    if directory.size > MAX_CENTRAL_DIRECTORY:
        raise source.error(
            f"zip central directory is {directory.size} bytes; modelyard reads at most {MAX_CENTRAL_DIRECTORY}"
        )
    if directory.entries * _CENTRAL.size > directory.size:
        raise source.error(
            f"zip central directory claims {directory.entries} members in {directory.size} bytes (corrupt)"
        )
    return directory


def _read_members(source: ByteSource, directory: _Directory) -> dict[str, ZipMember]:
    data = source.read(directory.offset, directory.size, "the zip central directory")
    members: dict[str, ZipMember] = {}
    position = 0
    for number in range(directory.entries):
        member, position = _parse_entry(source, data, position, number, directory.offset)
        if member.name in members:
            raise source.error(f"zip member {_shown(member.name)} appears twice (duplicate names are refused)")
        members[member.name] = member
    if position != len(data):
        raise source.error(f"zip central directory has {len(data) - position} bytes after its last member (corrupt)")
    return members


def _parse_entry(source: ByteSource, data: bytes, position: int, number: int, limit: int) -> tuple[ZipMember, int]:
    if position + _CENTRAL.size > len(data):
        raise source.error(f"zip central directory ends inside entry {number} (truncated or corrupt)")
    fields = _CENTRAL.unpack_from(data, position)
    signature, _, _, flags, method, _, _, crc, compressed, size, name_length, extra_length, comment_length = fields[:13]
    header_offset = fields[16]
    if signature != _CENTRAL_SIGNATURE:
        raise source.error(f"zip central directory entry {number} has a bad signature (corrupt)")
    name_start = position + _CENTRAL.size
    end = name_start + name_length + extra_length + comment_length
    if end > len(data):
        raise source.error(f"zip central directory ends inside entry {number} (truncated or corrupt)")
    name = _decode_name(source, data[name_start : name_start + name_length], flags)
    extra = data[name_start + name_length : name_start + name_length + extra_length]
    size, compressed, header_offset = _zip64_values(source, name, extra, size, compressed, header_offset)
    member = ZipMember(name, method, flags, crc, compressed, size, header_offset)
    _check_member(source, member, limit)
    return member, end


def _decode_name(source: ByteSource, raw: bytes, flags: int) -> str:
    try:
        name = raw.decode("utf-8") if flags & _FLAG_UTF8 else raw.decode("cp437")
    except UnicodeDecodeError:
        raise source.error(f"zip member name {raw[:60]!r} is not valid UTF-8") from None
    _check_name(source, name)
    return name


def _check_name(source: ByteSource, name: str) -> None:
    if not name or "\x00" in name:
        raise source.error(f"zip member name {_shown(name)} is empty or holds a NUL byte")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise source.error(f"zip member {_shown(name)} has an absolute path")
    if "\\" in name:
        raise source.error(f"zip member {_shown(name)} has a backslash in its path")
    segments = name.removesuffix("/").split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        raise source.error(f"zip member {_shown(name)} has an empty, '.' or '..' path segment (escapes its folder)")


def _zip64_values(
    source: ByteSource, name: str, extra: bytes, size: int, compressed: int, header_offset: int
) -> tuple[int, int, int]:
    """Sizes and offset saturated at 0xFFFFFFFF live, in that order, in the zip64 extra field."""
    wanted = [value == 0xFFFFFFFF for value in (size, compressed, header_offset)]
    if not any(wanted):
        return size, compressed, header_offset
    payload = _extra_field(source, name, extra, _ZIP64_EXTRA)
    values = [size, compressed, header_offset]
    position = 0
    for index, needed in enumerate(wanted):
        if needed:
            if position + 8 > len(payload):
                raise source.error(f"zip member {_shown(name)}: zip64 extra field is too short (corrupt)")
            values[index] = int.from_bytes(payload[position : position + 8], "little")
            position += 8
    return values[0], values[1], values[2]


def _extra_field(source: ByteSource, name: str, extra: bytes, wanted: int) -> bytes:
    position = 0
    while position + 4 <= len(extra):
        kind, length = struct.unpack_from("<HH", extra, position)
        if position + 4 + length > len(extra):
            break
        if kind == wanted:
            return extra[position + 4 : position + 4 + length]
        position += 4 + length
    raise source.error(f"zip member {_shown(name)}: sizes need a zip64 extra field, which is missing (corrupt)")


def _check_member(source: ByteSource, member: ZipMember, directory_offset: int) -> None:
    if member.flags & _FLAG_ENCRYPTED:
        raise _member_error(source, member, "is encrypted")
    if member.header_offset + _LOCAL.size + member.compressed_size > directory_offset:
        raise _member_error(
            source,
            member,
            f"claims {member.compressed_size} bytes at offset {member.header_offset}, past the central directory "
            f"at {directory_offset} (truncated or corrupt)",
        )
    if member.method == STORED and member.compressed_size != member.size:
        raise _member_error(source, member, f"is stored but records {member.compressed_size} and {member.size} bytes")
    if member.method == DEFLATED and member.size > member.compressed_size * _DEFLATE_MAX_RATIO + 1024:
        raise _member_error(
            source, member, f"claims to inflate {member.compressed_size} bytes to {member.size}, which deflate cannot"
        )


def _single_top_folder(source: ByteSource, members: dict[str, ZipMember]) -> str:
    if not members:
        raise source.error("is an empty zip archive (a torch checkpoint holds data.pkl)")
    prefix = next(iter(members)).split("/", 1)[0]
    for name in members:
        top, slash, rest = name.partition("/")
        if top != prefix or not slash or not rest:
            raise source.error(
                f"zip member {_shown(name)} lies outside the archive's single top-level folder {prefix!r}"
            )
    return prefix


def _data_range(source: ByteSource, archive: TorchZip, member: ZipMember) -> tuple[int, int]:
    """The offset and length of a member's bytes, from its local header (checked against the
    central directory: a different name there would make readers disagree on the contents)."""
    header = source.read(member.header_offset, _LOCAL.size, f"zip member {_shown(member.name)} local header")
    signature, _, flags, method, _, _, _, _, _, name_length, extra_length = _LOCAL.unpack(header)
    if signature != _LOCAL_SIGNATURE:
        raise _member_error(source, member, f"has no local header at offset {member.header_offset} (corrupt)")
    raw_name = source.read(
        member.header_offset + _LOCAL.size, name_length, f"zip member {_shown(member.name)} local name"
    )
    if raw_name.decode("utf-8" if flags & _FLAG_UTF8 else "cp437", "replace") != member.name or method != member.method:
        raise _member_error(source, member, "local header disagrees with the central directory (corrupt)")
    offset = member.header_offset + _LOCAL.size + name_length + extra_length
    if offset + member.compressed_size > archive.central_directory_offset:
        raise _member_error(source, member, "data runs into the central directory (truncated or corrupt)")
    return offset, member.compressed_size


def _inflate(source: ByteSource, member: ZipMember, compressed: bytes) -> bytes:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        data = inflater.decompress(compressed, member.size + 1)  # the cap bounds what inflating allocates
    except zlib.error as exc:
        raise _member_error(source, member, f"is not valid deflate data ({exc})") from None
    if len(data) != member.size or not inflater.eof:
        raise _member_error(source, member, f"does not inflate to its recorded {member.size} bytes (corrupt)")
    if zlib.crc32(data) != member.crc:
        raise _member_error(source, member, "fails its CRC-32 check (corrupt)")
    return data


def _member_error(source: ByteSource, member: ZipMember, problem: str) -> InvalidModelFileError:
    return source.error(f"zip member {_shown(member.name)} {problem}")


def _shown(name: str) -> str:
    """A member name for a message: quoted, escaped, and cut short if absurdly long."""
    return repr(name if len(name) <= 200 else name[:200] + "...")
