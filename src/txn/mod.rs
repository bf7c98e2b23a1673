//! INVITE transaction state (kept inside the dialog record).
