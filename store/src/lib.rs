//! seedq-store (skeleton).
