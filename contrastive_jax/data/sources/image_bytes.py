"""An image file's bytes, checked before TensorFlow decodes them.

A decode that fails inside tf.data kills the run, and tf.data cannot skip
the example without shifting every later position of the stream (the order
and resume rest on positions). So each file is checked in the Python read
step, where a failure can still be handled, with a few byte comparisons
instead of a decode: the format's magic bytes, its end marker, the size its
header promises. Files that fail a check, whose format is none of the
four, or that TensorFlow decodes wrongly (BMP with a palette or bit fields)
or unlike the PIL pipelines images are usually read with (CMYK JPEG), are
decoded by PIL and passed on as PNG; only what PIL cannot decode either is
bad.

What the checks cannot see: a file of the right length with damaged
entropy-coded data (bytes flipped mid-file, a few in a hundred of which
stop TensorFlow's decoder). Finding those means decoding every image twice.
"""

import io
import struct

import numpy as np
from PIL import Image

# JPEG start-of-frame markers; TensorFlow decodes the Huffman-coded 8-bit
# ones (baseline, extended, progressive) and PIL the rest.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_TF_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2})
# Markers without a length field.
_STANDALONE = frozenset({0x01, 0xD8}) | frozenset(range(0xD0, 0xD8))
_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
# PNG's last chunk; a few bytes of padding after it are harmless.
_PNG_TAIL = 64


def sniff(data: bytes) -> str | None:
  """'jpeg', 'png', 'gif', 'bmp' from the magic bytes, else None."""
  if data[:3] == b'\xff\xd8\xff':
    return 'jpeg'
  if data[:8] == _PNG_MAGIC:
    return 'png'
  if data[:6] in (b'GIF87a', b'GIF89a'):
    return 'gif'
  if data[:2] == b'BM':
    return 'bmp'
  return None


def jpeg_frame(data: bytes):
  """(SOF marker, sample precision, components) of a JPEG, or None when the
  markers before the frame header are damaged."""
  pos, size = 2, len(data)
  while pos + 4 <= size:
    if data[pos] != 0xFF:
      return None
    marker = data[pos + 1]
    if marker == 0xFF:  # Fill byte.
      pos += 1
      continue
    if marker in _STANDALONE:
      pos += 2
      continue
    if marker in _SOF_MARKERS:
      if pos + 10 > size:
        return None
      return marker, data[pos + 4], data[pos + 9]
    if marker in (0xDA, 0xD9):  # A scan or the end before any frame.
      return None
    pos += 2 + ((data[pos + 2] << 8) | data[pos + 3])
  return None


def _jpeg_for_tf(data):
  if data[-2:] != b'\xff\xd9':  # No end-of-image marker: truncated.
    return False
  frame = jpeg_frame(data)
  # 4 components (CMYK, YCCK): PIL's conversion to RGB is the reference.
  return (frame is not None and frame[0] in _TF_SOF_MARKERS and
          frame[1] == 8 and frame[2] in (1, 3))


def _bmp_for_tf(data):
  if len(data) < 54 or struct.unpack_from('<I', data, 14)[0] < 40:
    return False  # An OS/2 header, or too short for any.
  offset, = struct.unpack_from('<I', data, 10)
  width, height = struct.unpack_from('<ii', data, 18)
  bits, compression = struct.unpack_from('<HI', data, 28)
  # TensorFlow reads palettes as grey levels and ignores bit fields.
  if bits not in (24, 32) or compression != 0 or width <= 0 or height == 0:
    return False
  row = (width * bits + 31) // 32 * 4
  return len(data) >= offset + row * abs(height)


_FOR_TF = {
    'jpeg': _jpeg_for_tf,
    'png': lambda data: b'IEND' in data[-_PNG_TAIL:],
    'gif': lambda data: data[-1:] == b';',  # The GIF trailer.
    'bmp': _bmp_for_tf,
}


def for_tensorflow(data: bytes) -> tuple[bytes | None, str | None]:
  """(bytes `tf.io.decode_image(channels=3)` decodes right, None), or
  (None, why the file is bad)."""
  if not data:
    return None, 'empty file'
  kind = sniff(data)
  if kind is not None and _FOR_TF[kind](data):
    return data, None
  try:
    return png_via_pil(data), None
  except Exception as e:  # pylint: disable=broad-except
    # PIL's plugins raise OSError, SyntaxError, ValueError, struct.error...
    what = f'damaged {kind.upper()}' if kind else 'not a JPEG/PNG/GIF/BMP'
    detail = str(e).strip().splitlines()[0][:120] if str(e).strip() else ''
    return None, f'{what} ({type(e).__name__}: {detail})'


def png_via_pil(data: bytes) -> bytes:
  """The first frame of any image PIL reads, as 8-bit RGB PNG bytes."""
  image = Image.open(io.BytesIO(data))
  image.load()
  if image.mode.startswith('I'):
    # 16-bit PNG samples ('I' in older PIL): keep the high byte, as
    # TensorFlow's PNG decoder does (PIL's own conversion clips at 255).
    values = np.asarray(image).astype(np.int64) >> 8
    image = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), 'L')
  out = io.BytesIO()
  # Fast compression: these bytes are decoded once, right away.
  image.convert('RGB').save(out, 'PNG', compress_level=1)
  return out.getvalue()

