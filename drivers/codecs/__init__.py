"""Pure codecs: bytes in, frames out, no I/O."""
