//! Policy rules: match requests, act on dialogs.
