//! TODO: timer
