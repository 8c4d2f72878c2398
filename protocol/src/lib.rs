//! seedq-protocol (skeleton).
