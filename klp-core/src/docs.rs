//! Design notes (documentation only).
