"""`DeviceCodec`: how one operator class writes and reads the body of its payloads on the GPU.

A codec is registered for an operator class with `register`; `codec_for` finds it for an
operator (None: that operator has no GPU kernels, and the device path stages its vectors to the
host and encodes them there, explicitly). The framing around the body (the 8-byte header, the
operator's extra header fields, the device buffer and its status slots) is
`mpicomp.compress.device`'s; a codec writes and reads only the body.
"""

from __future__ import annotations

CODECS: dict[type, DeviceCodec] = {}


class DeviceCodec:
    """The GPU body of one operator class's payloads; byte for byte the CPU's
    ``encode_body``/``decode_body``/``add_body`` for the same input, key and block scales.

    Arrays are device arrays of one namespace ``xp`` (CuPy; NumPy under the simulator), kernels
    run through `mpicomp.compress.cuda.launch`, and nothing synchronises or copies to the host
    (except the index upload of rand-k, see its codec).
    """

    def supports(self, op) -> bool:
        """Whether this codec implements ``op``'s configuration (e.g. a dense level coder)."""
        return True

    def scales(self, op, x) -> tuple:
        """The device arrays the body depends on beyond ``x`` and the key (block norms, clip
        bounds, grid ends), computed on the device; their last bits may differ from the CPU's
        where a sum runs in another order (maxima and minima are exact)."""
        return ()

    def host_scales(self, op, x) -> tuple:
        """`scales` computed the CPU's way from a host vector (what the CPU path sends)."""
        return ()

    def encode(self, op, x, key: int, scales: tuple, body, status) -> bytes:
        """Write the body of ``op``'s message of ``x`` into ``body``, with block scales
        ``scales`` (`scales`, or `host_scales` moved to the device).

        Parameters
        ----------
        op : Compressor
        x : device array
            Flat, C-contiguous float32/float64 vector.
        key : int
            The 64-bit key the CPU path would draw (`counter_rng.draw_key`), already drawn from
            the caller's generator (0 for deterministic operators).
        body : device uint8 array
            Exactly ``ceil(op.body_bits(d, dtype) / 8)`` bytes, contents undefined on entry.
        status : device int64 array
            `STATUS_FIELDS` slots (`mpicomp.compress.cuda`): atomically lowered to the first
            coordinate whose input is NaN/Inf (``NON_FINITE``) or that the CPU path rejects with
            a ValueError, e.g. an fp16 overflow (``REJECTED``).

        Returns
        -------
        bytes
            The operator's extra header fields (known on the host: e.g. rand-k's shared key).
        """
        raise NotImplementedError  # pragma: no cover

    def decode(self, op, extra: bytes, body, d: int, dtype, out, accumulate: bool,
               status) -> None:
        """``out[:] = `` (or, with ``accumulate``, ``out += ``) the decoded values.

        ``out`` is a device vector of ``d`` values of ``dtype`` (float64 when ``accumulate``:
        each value rounded to ``dtype`` first, then added, exactly as decoding and then adding
        does). A field or value the CPU path rejects with DecodeError (a level above s, an
        exponent of all ones, a non-finite or negative block scale, a non-finite decoded value)
        lowers ``status[REJECTED]`` to its coordinate (a block scale: the block's first one).
        ``body`` has the right size (the caller checked it).
        """
        raise NotImplementedError  # pragma: no cover


def register(*classes):
    """Class decorator: the decorated codec serves the operator classes ``classes``."""

    def add(codec_class):
        codec = codec_class()
        for cls in classes:
            CODECS[cls] = codec
        return codec_class

    return add


def codec_for(op):
    """The codec of ``op``'s class, or None (no GPU kernels: variable-size coders, top-k,
    compositions). Importing the kernel modules registers their codecs."""
    from . import casts, levels, sign  # noqa: F401  (registration)

    if not getattr(op, "fixed_size", False):
        return None
    codec = CODECS.get(type(op))
    return codec if codec is not None and codec.supports(op) else None
