//! seedq-broker (skeleton).
