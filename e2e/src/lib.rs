//! Helpers for seedq's end-to-end tests (skeleton).
