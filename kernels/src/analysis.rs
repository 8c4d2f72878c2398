//! Correlation and statistical analysis of a seed's output stream. STUB: owned by the scripts/analysis helper.
