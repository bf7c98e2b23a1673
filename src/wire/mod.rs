//! Zero-copy SIP wire layer: bytes -> views, views + edits -> bytes.
