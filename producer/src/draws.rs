//! Loading the observed draws a sieve compares against.
//!
//! Two file formats are accepted:
//!
//! * the original's JSON array of `{"date", "session", "draw"}` objects, optionally with
//!   `full_state` (a full generator output used by synthetic sets; it takes precedence over
//!   `draw`, as in the original loader), filtered by session;
//! * a plain JSON array of unsigned integers.
//!
//! The order is the file's order (nothing is re-sorted: `docs/defects.md` D1), and the first draw
//! of the window is draw 0: the window is `draws[draw_start .. draw_start + window]` of the
//! filtered list (`docs/semantics.md` section 1).

use std::path::Path;

use serde_json::Value;

/// Why a draws file or window was refused. Each message names the file and what to change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DrawsError {
    #[error("cannot read draws file {path}: {message}")]
    Read { path: String, message: String },
    #[error("draws file {path} is not valid JSON: {message}")]
    Json { path: String, message: String },
    #[error("draws file {path} must be a JSON array (of {{date, session, draw}} objects or of integers)")]
    NotAnArray { path: String },
    #[error("draws file {path}: entry {index} {problem}")]
    BadEntry {
        path: String,
        index: usize,
        problem: String,
    },
    #[error("draws file {path} has {available} draws{filter} but the window needs draws {start}..{end}: lower --draw-start or --window")]
    WindowPastEnd {
        path: String,
        available: usize,
        filter: String,
        start: usize,
        end: usize,
    },
    #[error("the draw window is empty (draws file {path} has {available} draws{filter} from --draw-start {start}): give at least one draw")]
    EmptyWindow {
        path: String,
        available: usize,
        filter: String,
        start: usize,
    },
    #[error("unknown session '{0}' in --sessions (use midday, evening or both, comma-separated)")]
    UnknownSession(String),
}

/// Parses `--sessions midday,evening`. An empty list is refused.
pub fn parse_sessions(text: &str) -> Result<Vec<String>, DrawsError> {
    let sessions: Vec<String> = text
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    if sessions.is_empty() {
        return Err(DrawsError::UnknownSession(text.to_string()));
    }
    for s in &sessions {
        if s != "midday" && s != "evening" {
            return Err(DrawsError::UnknownSession(s.clone()));
        }
    }
    Ok(sessions)
}

/// Reads every draw of `path` (after the session filter), in file order.
pub fn load_draws(path: &Path, sessions: &[String]) -> Result<Vec<u64>, DrawsError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| DrawsError::Read {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    parse_draws(&shown, &text, sessions)
}

/// Parses the content of a draws file (see the module doc for the formats).
pub fn parse_draws(path: &str, text: &str, sessions: &[String]) -> Result<Vec<u64>, DrawsError> {
    let value: Value = serde_json::from_str(text).map_err(|e| DrawsError::Json {
        path: path.to_string(),
        message: e.to_string(),
    })?;
    let Value::Array(entries) = value else {
        return Err(DrawsError::NotAnArray {
            path: path.to_string(),
        });
    };
    let bad = |index: usize, problem: String| DrawsError::BadEntry {
        path: path.to_string(),
        index,
        problem,
    };
    let mut draws = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        match entry {
            Value::Number(_) => draws.push(
                as_u64(entry)
                    .ok_or_else(|| bad(index, format!("{entry} is not an unsigned integer")))?,
            ),
            Value::Object(fields) => {
                match fields.get("session") {
                    Some(Value::String(s)) => {
                        if !sessions.iter().any(|want| want.eq_ignore_ascii_case(s)) {
                            continue;
                        }
                    }
                    Some(other) => {
                        return Err(bad(index, format!("has a non-string 'session' ({other})")))
                    }
                    // Entries without a session belong to no session filter: keep them only when
                    // every session is wanted, so a filter never silently mixes in unknown data.
                    None => {
                        if sessions.len() < 2 {
                            return Err(bad(
                                index,
                                "has no 'session' field but --sessions filters by session"
                                    .to_string(),
                            ));
                        }
                    }
                }
                let field = if fields.contains_key("full_state") {
                    "full_state"
                } else {
                    "draw"
                };
                let raw = fields
                    .get(field)
                    .ok_or_else(|| bad(index, "has no 'draw' field".to_string()))?;
                let value = as_u64(raw).ok_or_else(|| {
                    bad(
                        index,
                        format!("has '{field}' = {raw}, not an unsigned integer"),
                    )
                })?;
                draws.push(value);
            }
            other => {
                return Err(bad(
                    index,
                    format!("is {other}, expected an integer or a {{date, session, draw}} object"),
                ))
            }
        }
    }
    Ok(draws)
}

fn as_u64(value: &Value) -> Option<u64> {
    value.as_u64()
}

/// Cuts the window `[start, start + window)` out of the (filtered) draws. `window = None` takes
/// every draw from `start` on.
pub fn select_window(
    path: &str,
    draws: &[u64],
    sessions: &[String],
    start: usize,
    window: Option<usize>,
) -> Result<Vec<u64>, DrawsError> {
    let filter = if sessions.len() < 2 {
        format!(" in session {}", sessions.join(","))
    } else {
        String::new()
    };
    let available = draws.len();
    let end = match window {
        Some(k) => start.saturating_add(k),
        None => available.max(start),
    };
    if end == start {
        return Err(DrawsError::EmptyWindow {
            path: path.to_string(),
            available,
            filter,
            start,
        });
    }
    if end > available {
        return Err(DrawsError::WindowPastEnd {
            path: path.to_string(),
            available,
            filter,
            start,
            end,
        });
    }
    Ok(draws[start..end].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both() -> Vec<String> {
        vec!["midday".into(), "evening".into()]
    }

    #[test]
    fn plain_integer_array_keeps_file_order() {
        assert_eq!(
            parse_draws("f", "[5, 3, 999, 0]", &both()).unwrap(),
            vec![5, 3, 999, 0]
        );
    }

    #[test]
    fn daily3_objects_are_filtered_by_session_in_file_order() {
        let text = r#"[
            {"date": "2024-01-02", "session": "evening", "draw": 1},
            {"date": "2024-01-02", "session": "midday", "draw": 2},
            {"date": "2024-01-01", "session": "evening", "draw": 3, "full_state": 123456}
        ]"#;
        assert_eq!(parse_draws("f", text, &both()).unwrap(), vec![1, 2, 123456]);
        assert_eq!(
            parse_draws("f", text, &["evening".to_string()]).unwrap(),
            vec![1, 123456]
        );
        assert_eq!(
            parse_draws("f", text, &["midday".to_string()]).unwrap(),
            vec![2]
        );
    }

    #[test]
    fn malformed_files_name_the_problem() {
        assert!(matches!(
            parse_draws("f", "[1, 2", &both()),
            Err(DrawsError::Json { .. })
        ));
        assert!(matches!(
            parse_draws("f", "{\"a\": 1}", &both()),
            Err(DrawsError::NotAnArray { .. })
        ));
        assert!(matches!(
            parse_draws("f", "[1, -2]", &both()),
            Err(DrawsError::BadEntry { index: 1, .. })
        ));
        assert!(matches!(
            parse_draws("f", "[1.5]", &both()),
            Err(DrawsError::BadEntry { index: 0, .. })
        ));
        assert!(matches!(
            parse_draws("f", "[\"7\"]", &both()),
            Err(DrawsError::BadEntry { index: 0, .. })
        ));
        let no_draw = r#"[{"date": "d", "session": "midday"}]"#;
        let err = parse_draws("f", no_draw, &both()).unwrap_err();
        assert!(err.to_string().contains("no 'draw' field"), "{err}");
    }

    #[test]
    fn window_selection_checks_bounds() {
        let draws: Vec<u64> = (0..10).collect();
        assert_eq!(
            select_window("f", &draws, &both(), 2, Some(3)).unwrap(),
            vec![2, 3, 4]
        );
        assert_eq!(
            select_window("f", &draws, &both(), 7, None).unwrap(),
            vec![7, 8, 9]
        );
        assert!(matches!(
            select_window("f", &draws, &both(), 8, Some(3)),
            Err(DrawsError::WindowPastEnd { .. })
        ));
        assert!(matches!(
            select_window("f", &draws, &both(), 0, Some(0)),
            Err(DrawsError::EmptyWindow { .. })
        ));
        assert!(matches!(
            select_window("f", &draws, &both(), 10, None),
            Err(DrawsError::EmptyWindow { .. })
        ));
        assert!(matches!(
            select_window("f", &draws, &both(), 12, None),
            Err(DrawsError::EmptyWindow { .. })
        ));
    }

    #[test]
    fn sessions_are_validated() {
        assert_eq!(
            parse_sessions("midday, Evening").unwrap(),
            vec!["midday", "evening"]
        );
        assert!(parse_sessions("night").is_err());
        assert!(parse_sessions(",").is_err());
    }
}
