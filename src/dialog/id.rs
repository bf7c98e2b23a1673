//! TODO: id
