//! Runs one script job as a subprocess and judges the result, with no broker or Redis involved.
//!
//! Everything the original system got wrong about script execution (`docs/defects.md` C6,
//! R2, R7) is decided here, so it can be unit-tested in isolation:
//!
//! * **No shell.** The node's interpreter is spawned directly with the script path and the job's
//!   arguments as separate argv entries (`tokio::process`), so nothing in a job is ever parsed by
//!   a shell.
//! * **Script root.** The script and the expected output must resolve inside the node's script
//!   root. `..` components, absolute paths elsewhere and symlinks that leave the root are refused
//!   before anything runs ([`ScriptRoot`]). The output path is checked again after the run, since
//!   a script can turn it into a symlink.
//! * **Private output directory.** Every run gets a directory of its own under the root,
//!   [`PRIVATE_OUTPUTS`]`/<batch>/<task>/<attempt>-<unique>`, created empty before the script
//!   starts. The script learns it as [`OUTPUT_DIR_PLACEHOLDER`] in its arguments and as
//!   `SEEDQ_OUTPUT_DIR` in its environment, and an `expected_output` that starts with the
//!   placeholder resolves inside it. Two runs on one node (two batches, or two lives of one) can
//!   then never collect or delete each other's output. A fixed `expected_output` path (a jobs
//!   file written before the placeholder) is shared by every run that names it; the serve loop
//!   serializes those runs ([`ScriptRoot::shared_output`]).
//! * **Process group and hard timeout.** The child is the leader of a new process group; on
//!   timeout the whole group gets SIGTERM, then SIGKILL after a short grace, so grandchildren
//!   cannot keep a GPU busy. The group is also killed after a normal exit, because a script that
//!   backgrounded a helper must not leave it running on the node.
//! * **Success** = exit status 0, AND the expected output was written during this run (absent
//!   before and present after, or its modification time / identity changed; a stale file from
//!   an earlier run does not count), AND it is not empty, AND if it is JSON (a `.json` path must
//!   parse) it does not say `"status": "error"` or `"success": false`.
//! * Tails of stdout and stderr are kept (bounded), whatever the outcome.
//!
//! The caller (the serve loop in [`super`]) uploads the output, exit status, duration and tails
//! to Redis, and only then calls [`RunReport::remove_output`], which also removes the private
//! directory.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

/// Why a script job failed. [`RunFailure::reason`] is the typed reason that goes into
/// the dead-letter header and Redis; `Display` is the sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunFailure {
    #[error("path '{path}' resolves outside the script root {root}: {detail}")]
    EscapesRoot {
        path: String,
        root: String,
        detail: String,
    },
    #[error("script '{path}' not found under the script root: {detail}")]
    ScriptNotFound { path: String, detail: String },
    #[error("expected output '{path}' misuses {{output_dir}}: {detail}")]
    BadPlaceholder { path: String, detail: String },
    #[error("could not start '{interpreter}': {detail} (check python_env in cluster.toml)")]
    SpawnFailed { interpreter: String, detail: String },
    #[error("timed out after {secs} s; the whole process group was killed")]
    Timeout { secs: u64 },
    #[error("exited with status {code}")]
    NonZeroExit { code: i32 },
    #[error("killed by signal {signal}")]
    Signalled { signal: i32 },
    #[error("exited 0 but did not write its expected output '{path}'")]
    OutputMissing { path: String },
    #[error("exited 0 but '{path}' was not written during this run (a stale file from before)")]
    OutputStale { path: String },
    #[error("expected output '{path}' is empty")]
    OutputEmpty { path: String },
    #[error("expected output '{path}' is larger than the {limit}-byte limit ({size} bytes)")]
    OutputTooLarge { path: String, size: u64, limit: u64 },
    #[error("tried to write a file over the node's {limit}-byte limit (script_max_file_bytes) and was stopped")]
    FileTooLarge { limit: u64 },
    #[error("expected output '{path}' is not valid JSON: {detail}")]
    OutputInvalidJson { path: String, detail: String },
    #[error("the script reported an error in its output: {message}")]
    StatusError { message: String },
    #[error("I/O error on the node: {detail}")]
    Io { detail: String },
}

impl RunFailure {
    /// The reason recorded for it (`x-seedq-error`, Redis failure counters); its class says
    /// whether another attempt could succeed.
    pub fn reason(&self) -> seedq_protocol::FailureReason {
        use seedq_protocol::FailureReason as R;
        match self {
            RunFailure::EscapesRoot { .. } => R::PathEscapesRoot,
            RunFailure::ScriptNotFound { .. } => R::ScriptNotFound,
            RunFailure::BadPlaceholder { .. } => R::InvalidMessage,
            RunFailure::SpawnFailed { .. } => R::SpawnFailed,
            RunFailure::Timeout { .. } => R::Timeout,
            RunFailure::NonZeroExit { .. } => R::ExitStatus,
            RunFailure::Signalled { .. } => R::Signalled,
            RunFailure::OutputMissing { .. } => R::MissingOutput,
            RunFailure::OutputStale { .. } => R::StaleOutput,
            RunFailure::OutputEmpty { .. } => R::EmptyOutput,
            RunFailure::OutputTooLarge { .. } | RunFailure::FileTooLarge { .. } => {
                R::OutputTooLarge
            }
            RunFailure::OutputInvalidJson { .. } => R::InvalidJsonOutput,
            RunFailure::StatusError { .. } => R::StatusError,
            RunFailure::Io { .. } => R::IoError,
        }
    }
}

/// Stands for the run's private output directory in a job's `args` and `expected_output`.
pub const OUTPUT_DIR_PLACEHOLDER: &str = "{output_dir}";

/// The directory under the script root that holds the runs' private output directories.
pub const PRIVATE_OUTPUTS: &str = ".seedq-out";

/// Serializes creating and pruning directories under [`PRIVATE_OUTPUTS`]: a run that prunes its
/// emptied batch directory must not remove it while another run is creating its own inside.
static PRIVATE_TREE: Mutex<()> = Mutex::new(());

/// The node's script root, canonicalised once. Every path a job names is resolved against it.
#[derive(Debug, Clone)]
pub struct ScriptRoot {
    root: PathBuf,
}

impl ScriptRoot {
    pub fn new(root: &Path) -> io::Result<Self> {
        let root = std::fs::canonicalize(root)?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(ScriptRoot { root })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    fn escapes(&self, path: &str, detail: impl Into<String>) -> RunFailure {
        RunFailure::EscapesRoot {
            path: path.to_string(),
            root: self.root.display().to_string(),
            detail: detail.into(),
        }
    }

    /// Resolves an existing script: follows every symlink and requires the result to be a file
    /// inside the root.
    pub fn resolve_script(&self, script: &str) -> Result<PathBuf, RunFailure> {
        let lexical = self.lexical(script)?;
        let resolved = std::fs::canonicalize(&lexical).map_err(|e| RunFailure::ScriptNotFound {
            path: script.to_string(),
            detail: e.to_string(),
        })?;
        if !resolved.starts_with(&self.root) {
            return Err(self.escapes(
                script,
                format!("it resolves to {} (through a symlink)", resolved.display()),
            ));
        }
        if !resolved.is_file() {
            return Err(RunFailure::ScriptNotFound {
                path: script.to_string(),
                detail: "not a regular file".into(),
            });
        }
        Ok(resolved)
    }

    /// Resolves an output path that may not exist yet: lexically inside the root, and the deepest
    /// existing ancestor (and the file itself, if present) must not leave the root via symlinks.
    pub fn resolve_output(&self, output: &str) -> Result<PathBuf, RunFailure> {
        self.check_output(output, self.lexical(output)?)
    }

    /// [`ScriptRoot::resolve_output`] for a path already folded lexically inside the root;
    /// `output` names it in messages.
    fn check_output(&self, output: &str, lexical: PathBuf) -> Result<PathBuf, RunFailure> {
        if lexical == self.root {
            return Err(self.escapes(output, "the output cannot be the script root itself"));
        }
        let mut existing = lexical.as_path();
        loop {
            match std::fs::symlink_metadata(existing) {
                Ok(_) => break,
                Err(_) => match existing.parent() {
                    Some(parent) => existing = parent,
                    None => break,
                },
            }
        }
        let resolved = std::fs::canonicalize(existing).map_err(|e| RunFailure::Io {
            detail: e.to_string(),
        })?;
        if !resolved.starts_with(&self.root) {
            return Err(self.escapes(
                output,
                format!("{} resolves to {}", existing.display(), resolved.display()),
            ));
        }
        Ok(lexical)
    }

    /// The path a job's `expected_output` names when it is a fixed path (no
    /// [`OUTPUT_DIR_PLACEHOLDER`]): every run naming it writes the same file, so the caller lets
    /// only one of them run at a time. `None` for a per-run output, and for a path the run will
    /// refuse anyway.
    pub fn shared_output(&self, expected_output: &str) -> Option<PathBuf> {
        if expected_output.contains(OUTPUT_DIR_PLACEHOLDER) {
            return None;
        }
        self.resolve_output(expected_output).ok()
    }

    /// Creates the run's private output directory (`relative`, from [`private_output_dir`]) and
    /// returns its canonical path. Its last component must not exist yet: a directory that is
    /// already there could hold another run's files.
    fn create_private_dir(&self, relative: &Path) -> Result<PathBuf, RunFailure> {
        let name = relative.display().to_string();
        let io = |what: &str, e: io::Error| RunFailure::Io {
            detail: format!("{what} the private output directory {name}: {e}"),
        };
        let lexical = self.resolve_output(&name)?;
        let _tree = PRIVATE_TREE.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(parent) = lexical.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("creating", e))?;
        }
        std::fs::create_dir(&lexical).map_err(|e| io("creating", e))?;
        // A symlink planted among the parents by an earlier script would have moved it.
        let resolved = std::fs::canonicalize(&lexical).map_err(|e| io("resolving", e))?;
        if !resolved.starts_with(&self.root) {
            return Err(self.escapes(&name, format!("it resolves to {}", resolved.display())));
        }
        Ok(resolved)
    }

    /// Resolves `expected_output` for a run whose private directory is `private`: a path that
    /// starts with [`OUTPUT_DIR_PLACEHOLDER`] lies inside it (and may not climb out of it), any
    /// other path is a fixed path under the root ([`ScriptRoot::resolve_output`]).
    fn resolve_expected(&self, expected: &str, private: &Path) -> Result<PathBuf, RunFailure> {
        if !expected.contains(OUTPUT_DIR_PLACEHOLDER) {
            return self.resolve_output(expected);
        }
        let bad = |detail: &str| RunFailure::BadPlaceholder {
            path: expected.to_string(),
            detail: detail.to_string(),
        };
        let rest = placeholder_relative(expected).map_err(bad)?;
        // Only plain components: lexically inside `private`, itself canonical inside the root.
        self.check_output(expected, private.join(rest))
    }

    /// `root.join(path)` with `.` and `..` folded lexically; refuses anything that would climb
    /// above the root or an absolute path outside it.
    fn lexical(&self, path: &str) -> Result<PathBuf, RunFailure> {
        if path.is_empty() {
            return Err(RunFailure::ScriptNotFound {
                path: String::new(),
                detail: "empty path".into(),
            });
        }
        let given = Path::new(path);
        let relative: PathBuf = if given.is_absolute() {
            match given.strip_prefix(&self.root) {
                Ok(rest) => rest.to_path_buf(),
                Err(_) => return Err(self.escapes(path, "absolute path outside the root")),
            }
        } else {
            given.to_path_buf()
        };
        let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
        for component in relative.components() {
            match component {
                Component::Normal(part) => parts.push(part),
                Component::CurDir => {}
                Component::ParentDir => {
                    if parts.pop().is_none() {
                        return Err(self.escapes(path, "'..' climbs above the root"));
                    }
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(self.escapes(path, "absolute path"))
                }
            }
        }
        let mut out = self.root.clone();
        out.extend(parts);
        Ok(out)
    }
}

/// The part of an `expected_output` after its leading [`OUTPUT_DIR_PLACEHOLDER`], folded
/// lexically: a file path inside the private directory. The placeholder may only come first and
/// only once, and the rest must name a file without climbing out of the directory (the parents
/// are shared with the task's other runs). The producer's jobs-file validation applies the same
/// rule, so a node only sees a violation in a hand-made message.
pub fn placeholder_relative(expected: &str) -> Result<PathBuf, &'static str> {
    let rest = expected
        .strip_prefix(OUTPUT_DIR_PLACEHOLDER)
        .ok_or("the placeholder may only start the path")?;
    if rest.contains(OUTPUT_DIR_PLACEHOLDER) {
        return Err("the placeholder may appear only once");
    }
    let rest = rest
        .strip_prefix('/')
        .ok_or("the placeholder must be followed by '/' and a file name")?;
    let mut parts: Vec<&OsStr> = Vec::new();
    for component in Path::new(rest).components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err("'..' climbs out of the private output directory");
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err("the rest of the path must be relative")
            }
        }
    }
    if parts.is_empty() {
        return Err("it must name a file inside the directory, not the directory itself");
    }
    Ok(parts.iter().collect())
}

/// A fresh private output directory for one run of `task` of `batch`, relative to the script
/// root: `.seedq-out/<batch>/<task>/<attempt>-<unique>`. The unique part (process id, a counter
/// and the time) keeps two runs apart even within one attempt: a redelivery, or a batch created
/// again under the same id while its earlier life still runs here.
pub fn private_output_dir(batch: &str, task: &str, attempt: u32) -> PathBuf {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    // Ids are validated identifiers, which may still be `.` or `..`: never a path step.
    let component = |id: &str| {
        if id.starts_with('.') {
            format!("_{id}")
        } else {
            id.to_string()
        }
    };
    [
        PRIVATE_OUTPUTS.to_string(),
        component(batch),
        component(task),
        format!("{attempt}-{:x}-{run:x}-{nanos:x}", std::process::id()),
    ]
    .iter()
    .collect()
}

/// `arg` with every [`OUTPUT_DIR_PLACEHOLDER`] replaced by `dir` (as an `OsString`: the root need
/// not be valid UTF-8).
fn substitute(arg: &str, dir: &Path) -> OsString {
    let mut out = OsString::new();
    let mut pieces = arg.split(OUTPUT_DIR_PLACEHOLDER);
    if let Some(first) = pieces.next() {
        out.push(first);
    }
    for piece in pieces {
        out.push(dir);
        out.push(piece);
    }
    out
}

/// One script execution, as the serve loop describes it to the runner.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The node's `python_env` (any interpreter: it receives `script args...`).
    pub interpreter: PathBuf,
    pub script: String,
    /// Passed as given, except that [`OUTPUT_DIR_PLACEHOLDER`] becomes the private directory.
    pub args: Vec<String>,
    /// Relative to the script root (or absolute inside it), or starting with
    /// [`OUTPUT_DIR_PLACEHOLDER`]: inside the run's private directory.
    pub expected_output: String,
    /// The run's private output directory, relative to the script root
    /// ([`private_output_dir`]); the runner creates it.
    pub output_dir: PathBuf,
    pub timeout: Duration,
    /// The job's own variables (its `env`, already checked against the node's
    /// `script_env_allow`): set before [`RunRequest::env`], which wins over them.
    pub job_env: Vec<(String, String)>,
    /// Extra environment: GPU binding, ROCm and allocator settings from the node's config.
    pub env: Vec<(String, String)>,
    /// Bytes of stdout and stderr kept (each), the last ones.
    pub tail_bytes: usize,
    /// Outputs above this size are refused rather than loaded into Redis.
    pub max_output_bytes: u64,
    /// No file the script writes may grow past this (RLIMIT_FSIZE: the kernel stops the write
    /// with SIGXFSZ), so a runaway output cannot fill the node's disk; `None`: no limit.
    pub max_file_bytes: Option<u64>,
    /// Time between SIGTERM and SIGKILL to the process group on timeout.
    pub kill_grace: Duration,
}

impl RunRequest {
    pub const DEFAULT_TAIL_BYTES: usize = 16 * 1024;
    pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 64 * 1024 * 1024;
}

/// How the process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
}

/// Everything known after a run. `output` is the file content on success.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub exit: ExitInfo,
    pub duration: Duration,
    pub stdout_tail: String,
    pub stderr_tail: String,
    pub outcome: Result<Vec<u8>, RunFailure>,
    /// A fresh output that reported an error (`status: error`): kept for the failure record,
    /// since such files carry the script's own diagnosis.
    pub error_output: Option<Vec<u8>>,
    /// The resolved output path, when the run wrote it: removed after upload.
    pub output_path: Option<PathBuf>,
    /// The run's private output directory (once created): removed with the output.
    pub private_dir: Option<PathBuf>,
}

impl RunReport {
    fn refused(reason: RunFailure) -> Self {
        RunReport {
            exit: ExitInfo::default(),
            duration: Duration::ZERO,
            stdout_tail: String::new(),
            stderr_tail: String::new(),
            outcome: Err(reason),
            error_output: None,
            output_path: None,
            private_dir: None,
        }
    }

    fn with_private_dir(mut self, dir: PathBuf) -> Self {
        self.private_dir = Some(dir);
        self
    }

    /// Removes the local output file (if this run wrote it) and the run's private directory.
    /// Call only after the result is durably stored. What is already gone is fine; paths are re-checked so a symlink
    /// planted by the script never makes the node delete something outside the root.
    pub fn remove_output(&self, root: &ScriptRoot) -> io::Result<()> {
        let file = match &self.output_path {
            Some(path) => remove_file_inside(root, path),
            None => Ok(()),
        };
        let dir = match &self.private_dir {
            Some(dir) => remove_private_dir(root, dir),
            None => Ok(()),
        };
        file.and(dir)
    }
}

fn remove_file_inside(root: &ScriptRoot, path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() => {
            let parent = path.parent().map(std::fs::canonicalize).transpose()?;
            if parent.is_some_and(|p| p.starts_with(root.path())) {
                std::fs::remove_file(path)?;
            }
            Ok(())
        }
        // A symlink is removed itself (not its target); anything else is left alone.
        Ok(meta) if meta.file_type().is_symlink() => std::fs::remove_file(path),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes a private output directory with everything in it (`remove_dir_all` does not follow
/// symlinks inside), then its task and batch directories if that left them empty.
fn remove_private_dir(root: &ScriptRoot, dir: &Path) -> io::Result<()> {
    let _tree = PRIVATE_TREE.lock().unwrap_or_else(|p| p.into_inner());
    let removed = match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.file_type().is_symlink() => std::fs::remove_file(dir),
        Ok(meta) if meta.is_dir() => {
            let parent = dir.parent().map(std::fs::canonicalize).transpose()?;
            if parent.is_some_and(|p| p.starts_with(root.path())) {
                std::fs::remove_dir_all(dir)
            } else {
                Ok(())
            }
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    let outputs = root.path().join(PRIVATE_OUTPUTS);
    for emptied in dir.ancestors().skip(1).take(2) {
        // Fails while another run of the task or batch still has its directory there: kept.
        if !emptied.starts_with(&outputs)
            || emptied == outputs
            || std::fs::remove_dir(emptied).is_err()
        {
            break;
        }
    }
    removed
}

/// What the output file looked like before the run, to tell a fresh write from a stale file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
    device: u64,
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(Fingerprint {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
        device: meta.dev(),
    })
}

/// Whether the output was written during the run that started at `start`: absent before and
/// present after, or changed (identity, size, modification time), or modified since the start
/// (a rewrite within the clock's granularity leaves the rest equal).
fn written_during(
    before: Option<&Fingerprint>,
    after: Option<&Fingerprint>,
    start: SystemTime,
) -> bool {
    match (before, after) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(before), Some(after)) => {
            before != after || after.modified.is_some_and(|m| m >= start)
        }
    }
}

/// Keeps the last `cap` bytes of a stream.
async fn read_tail<R: AsyncRead + Unpin>(mut reader: R, cap: usize) -> Vec<u8> {
    let mut tail: VecDeque<u8> = VecDeque::with_capacity(cap.min(64 * 1024));
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend(&buf[..n]);
                let excess = tail.len().saturating_sub(cap);
                tail.drain(..excess);
            }
        }
    }
    tail.into()
}

/// Variables a script inherits from the consumer's environment (everything else is cleared).
fn inherited_variable(name: &str) -> bool {
    matches!(
        name,
        "PATH" | "HOME" | "LANG" | "LANGUAGE" | "TMPDIR" | "TZ" | "USER" | "LOGNAME"
    ) || name.starts_with("LC_")
}

mod signals {
    //! The two libc calls the runner needs; declared here so the consumer needs no libc crate.
    use std::os::raw::c_int;
    extern "C" {
        fn killpg(pgrp: c_int, sig: c_int) -> c_int;
        fn setrlimit(resource: c_int, rlim: *const Rlimit) -> c_int;
    }
    pub const SIGTERM: c_int = 15;
    pub const SIGKILL: c_int = 9;
    /// Sent by the kernel to a process writing past RLIMIT_FSIZE (Linux).
    pub const SIGXFSZ: c_int = 25;
    const RLIMIT_FSIZE: c_int = 1;

    #[repr(C)]
    struct Rlimit {
        cur: u64,
        max: u64,
    }

    /// Caps the size of every file this process (and its children) writes. Called between fork
    /// and exec: async-signal-safe (one system call).
    pub fn limit_file_size(bytes: u64) -> std::io::Result<()> {
        let limit = Rlimit {
            cur: bytes,
            max: bytes,
        };
        // SAFETY: `limit` is a valid rlimit for the duration of the call.
        if unsafe { setrlimit(RLIMIT_FSIZE, &limit) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Sends `sig` to every process in group `pgid`. Returns false when the group is empty.
    pub fn kill_group(pgid: u32, sig: c_int) -> bool {
        if pgid == 0 || pgid > i32::MAX as u32 {
            return false;
        }
        // SAFETY: killpg has no memory-safety preconditions; a stale pgid only yields ESRCH.
        unsafe { killpg(pgid as c_int, sig) == 0 }
    }
}

/// Kills the process group if the run is abandoned (the future dropped during shutdown), so a
/// cancelled job never leaves processes behind.
struct GroupGuard {
    pgid: Option<u32>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            signals::kill_group(pgid, signals::SIGKILL);
        }
    }
}

/// Removes the private output directory of a run that is abandoned (its future dropped during
/// shutdown); a run that returns hands the directory to its report instead.
struct DirGuard<'a> {
    root: &'a ScriptRoot,
    dir: Option<PathBuf>,
}

impl DirGuard<'_> {
    fn keep(mut self) -> PathBuf {
        self.dir.take().expect("the directory is kept once")
    }
}

impl Drop for DirGuard<'_> {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = remove_private_dir(self.root, &dir);
        }
    }
}

/// Runs the job to completion (or timeout) and judges it. Never panics on job content; every
/// problem becomes a [`RunFailure`].
pub async fn run(root: &ScriptRoot, request: &RunRequest) -> RunReport {
    let script = match root.resolve_script(&request.script) {
        Ok(path) => path,
        Err(reason) => return RunReport::refused(reason),
    };
    let private = match root.create_private_dir(&request.output_dir) {
        Ok(path) => path,
        Err(reason) => return RunReport::refused(reason),
    };
    let dir_guard = DirGuard {
        root,
        dir: Some(private.clone()),
    };
    let output = match root.resolve_expected(&request.expected_output, &private) {
        Ok(path) => path,
        Err(reason) => return RunReport::refused(reason).with_private_dir(dir_guard.keep()),
    };
    if let Some(parent) = output.parent() {
        if let Err(e) = std::fs::create_dir_all(parent) {
            return RunReport::refused(RunFailure::Io {
                detail: format!("creating {}: {e}", parent.display()),
            })
            .with_private_dir(dir_guard.keep());
        }
    }
    let before = fingerprint(&output);

    let mut command = Command::new(&request.interpreter);
    // A script starts from a cleared environment: what the consumer itself holds (the broker and
    // Redis URLs with their passwords, anything else of the service's) never reaches a job, its
    // output or its log tails. Only the basics a program needs pass through, then the request's
    // own variables: the job's allowed `env`, then the GPU binding and the node's `[nodes.env]`,
    // which a job cannot override.
    command
        .env_clear()
        .envs(std::env::vars_os().filter(|(k, _)| k.to_str().is_some_and(inherited_variable)))
        .arg(&script)
        .args(request.args.iter().map(|arg| substitute(arg, &private)))
        .current_dir(root.path())
        .env("PYTHONUNBUFFERED", "1")
        .envs(
            request
                .job_env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .envs(request.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        // Last, so that no `[nodes.env]` entry can point two runs at one directory.
        .env("SEEDQ_OUTPUT_DIR", &private)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(limit) = request.max_file_bytes {
        // SAFETY: the closure makes one async-signal-safe system call and allocates nothing.
        unsafe {
            command.pre_exec(move || signals::limit_file_size(limit));
        }
    }

    let start_wall = SystemTime::now();
    let start = Instant::now();
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            return RunReport::refused(RunFailure::SpawnFailed {
                interpreter: request.interpreter.display().to_string(),
                detail: e.to_string(),
            })
            .with_private_dir(dir_guard.keep())
        }
    };
    let mut guard = GroupGuard { pgid: child.id() };
    let stdout = tokio::spawn(read_tail(
        child.stdout.take().expect("piped stdout"),
        request.tail_bytes,
    ));
    let stderr = tokio::spawn(read_tail(
        child.stderr.take().expect("piped stderr"),
        request.tail_bytes,
    ));

    let mut exit = ExitInfo::default();
    let status = match tokio::time::timeout(request.timeout, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            exit.timed_out = true;
            if let Some(pgid) = guard.pgid {
                signals::kill_group(pgid, signals::SIGTERM);
            }
            match tokio::time::timeout(request.kill_grace, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    if let Some(pgid) = guard.pgid {
                        signals::kill_group(pgid, signals::SIGKILL);
                    }
                    child.wait().await
                }
            }
        }
    };
    let duration = start.elapsed();
    // Whatever the script left in its group (background helpers, or children that ignored
    // SIGTERM) goes now; with an empty group this is a no-op.
    if let Some(pgid) = guard.pgid.take() {
        signals::kill_group(pgid, signals::SIGKILL);
    }
    // A process that escaped the group (its own setsid) could hold the pipes open forever.
    let grace = Duration::from_secs(2);
    let stdout_tail = tail_text(tokio::time::timeout(grace, stdout).await);
    let stderr_tail = tail_text(tokio::time::timeout(grace, stderr).await);

    let mut report = RunReport {
        exit,
        duration,
        stdout_tail,
        stderr_tail,
        outcome: Err(RunFailure::Io {
            detail: "not judged".into(),
        }),
        error_output: None,
        // A file the run did not write (a stale one from before) is not the node's to delete:
        // it may be someone's data, and a retry must find it stale again, not missing.
        output_path: written_during(before.as_ref(), fingerprint(&output).as_ref(), start_wall)
            .then(|| output.clone()),
        private_dir: Some(dir_guard.keep()),
    };
    let status = match status {
        Ok(status) => status,
        Err(e) => {
            report.outcome = Err(RunFailure::Io {
                detail: format!("waiting for the script: {e}"),
            });
            return report;
        }
    };
    {
        use std::os::unix::process::ExitStatusExt;
        report.exit.code = status.code();
        report.exit.signal = status.signal();
    }
    report.outcome = if report.exit.timed_out {
        Err(RunFailure::Timeout {
            secs: request.timeout.as_secs(),
        })
    } else if let (Some(signals::SIGXFSZ), Some(limit)) =
        (report.exit.signal, request.max_file_bytes)
    {
        Err(RunFailure::FileTooLarge { limit })
    } else if let Some(signal) = report.exit.signal {
        Err(RunFailure::Signalled { signal })
    } else if report.exit.code != Some(0)
        && request.max_file_bytes.is_some()
        && report.stderr_tail.contains("File too large")
    {
        // Python (and others) ignore SIGXFSZ: the write fails with EFBIG, whose message the
        // script's traceback carries, and the script exits non-zero.
        Err(RunFailure::FileTooLarge {
            limit: request.max_file_bytes.unwrap_or_default(),
        })
    } else if report.exit.code != Some(0) {
        Err(RunFailure::NonZeroExit {
            code: report.exit.code.unwrap_or(-1),
        })
    } else {
        // Reading up to `max_output_bytes` and parsing it as JSON blocks: not on a tokio worker.
        let (root, name, max_bytes) = (
            root.clone(),
            request.expected_output.clone(),
            request.max_output_bytes,
        );
        let judged = tokio::task::spawn_blocking(move || {
            judge_output(
                &root,
                &name,
                &output,
                before.as_ref(),
                start_wall,
                max_bytes,
            )
        })
        .await;
        match judged {
            Ok(judged) => judged.map_err(|(reason, content)| {
                report.error_output = content;
                reason
            }),
            Err(e) => Err(RunFailure::Io {
                detail: format!("judging the output: {e}"),
            }),
        }
    };
    report
}

fn tail_text(
    joined: Result<Result<Vec<u8>, tokio::task::JoinError>, tokio::time::error::Elapsed>,
) -> String {
    match joined {
        Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        _ => String::from("(output stream still held open by an escaped process)"),
    }
}

/// Decides whether the output is fresh, present and not an error report; returns its bytes.
fn judge_output(
    root: &ScriptRoot,
    name: &str,
    path: &Path,
    before: Option<&Fingerprint>,
    start: SystemTime,
    max_bytes: u64,
) -> Result<Vec<u8>, (RunFailure, Option<Vec<u8>>)> {
    let plain = |reason: RunFailure| (reason, None);
    let missing = || RunFailure::OutputMissing {
        path: name.to_string(),
    };
    let meta = std::fs::symlink_metadata(path).map_err(|_| plain(missing()))?;
    if meta.file_type().is_symlink() {
        let target = std::fs::canonicalize(path).map_err(|_| plain(missing()))?;
        if !target.starts_with(root.path()) {
            return Err(plain(root.escapes(
                name,
                format!("the script made it a symlink to {}", target.display()),
            )));
        }
    }
    let after = fingerprint(path).ok_or_else(|| plain(missing()))?;
    if !written_during(before, Some(&after), start) {
        return Err(plain(RunFailure::OutputStale {
            path: name.to_string(),
        }));
    }
    if after.len == 0 {
        return Err(plain(RunFailure::OutputEmpty {
            path: name.to_string(),
        }));
    }
    if after.len > max_bytes {
        return Err(plain(RunFailure::OutputTooLarge {
            path: name.to_string(),
            size: after.len,
            limit: max_bytes,
        }));
    }
    let bytes = std::fs::read(path).map_err(|e| {
        plain(RunFailure::Io {
            detail: format!("reading {name}: {e}"),
        })
    })?;
    match check_json_status(name, &bytes) {
        Ok(()) => Ok(bytes),
        Err(reason @ RunFailure::StatusError { .. }) => Err((reason, Some(bytes))),
        Err(reason) => Err(plain(reason)),
    }
}

/// A `.json` output must parse; any JSON object output that reports `"status": "error"` or
/// `"success": false` is a failure (C6, R7: the original counted these as successes).
pub fn check_json_status(name: &str, bytes: &[u8]) -> Result<(), RunFailure> {
    let is_json_path = name.to_ascii_lowercase().ends_with(".json");
    let value: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(value) => value,
        Err(e) if is_json_path => {
            return Err(RunFailure::OutputInvalidJson {
                path: name.to_string(),
                detail: e.to_string(),
            })
        }
        Err(_) => return Ok(()),
    };
    let Some(object) = value.as_object() else {
        return Ok(());
    };
    let status_error = object
        .get("status")
        .and_then(|s| s.as_str())
        .is_some_and(|s| s.eq_ignore_ascii_case("error"));
    let success_false = object.get("success").and_then(|s| s.as_bool()) == Some(false);
    if status_error || success_false {
        let message = object
            .get("error")
            .or_else(|| object.get("message"))
            .map(|m| match m {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_else(|| {
                if status_error {
                    "status: error".into()
                } else {
                    "success: false".into()
                }
            });
        return Err(RunFailure::StatusError { message });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        dir: PathBuf,
        root: ScriptRoot,
    }

    impl Fixture {
        fn new(name: &str) -> Fixture {
            let dir =
                std::env::temp_dir().join(format!("seedq-runner-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("root")).unwrap();
            let root = ScriptRoot::new(&dir.join("root")).unwrap();
            Fixture { dir, root }
        }

        fn script(&self, name: &str, body: &str) {
            let path = self.root.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, body).unwrap();
        }

        fn request(&self, script: &str, output: &str, timeout_ms: u64) -> RunRequest {
            RunRequest {
                interpreter: PathBuf::from("/bin/sh"),
                script: script.into(),
                args: vec![],
                expected_output: output.into(),
                output_dir: private_output_dir("batch", "task", 1),
                timeout: Duration::from_millis(timeout_ms),
                job_env: vec![],
                env: vec![("CUDA_VISIBLE_DEVICES".into(), "1".into())],
                tail_bytes: 64,
                max_output_bytes: 1 << 20,
                max_file_bytes: None,
                kill_grace: Duration::from_millis(300),
            }
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn code(report: &RunReport) -> &'static str {
        match &report.outcome {
            Ok(_) => "ok",
            Err(reason) => reason.reason().as_str(),
        }
    }

    #[tokio::test]
    async fn scripts_see_only_the_allowlist_and_their_own_variables() {
        let fx = Fixture::new("env");
        fx.script("env.sh", "env > env.txt; echo '{}' > o.json\n");
        let report = run(&fx.root, &fx.request("env.sh", "o.json", 5_000)).await;
        assert_eq!(code(&report), "ok", "{report:?}");
        let dumped = std::fs::read_to_string(fx.root.path().join("env.txt")).unwrap();
        let names: Vec<&str> = dumped
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, _)| k)
            .collect();
        // cargo gives every test process CARGO_* variables: the script must not see them.
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        assert!(!names.contains(&"CARGO_MANIFEST_DIR"), "{names:?}");
        for name in &names {
            assert!(
                inherited_variable(name)
                    || [
                        "CUDA_VISIBLE_DEVICES",
                        "PYTHONUNBUFFERED",
                        "SEEDQ_OUTPUT_DIR",
                        "PWD",
                        "SHLVL",
                        "_",
                        "OLDPWD"
                    ]
                    .contains(name),
                "{name} leaked into the script's environment: {names:?}"
            );
        }
        assert!(
            names.contains(&"PATH") && names.contains(&"CUDA_VISIBLE_DEVICES"),
            "{names:?}"
        );
    }

    #[tokio::test]
    async fn a_script_writing_past_the_file_limit_is_stopped_with_a_reason() {
        let fx = Fixture::new("fsize");
        // 8 MiB into the output, against a 1 MiB file limit: the write stops at the limit.
        fx.script("big.sh", "exec head -c 8388608 /dev/zero > o.json\n");
        let mut request = fx.request("big.sh", "o.json", 10_000);
        request.max_file_bytes = Some(1 << 20);
        let report = run(&fx.root, &request).await;
        assert_eq!(code(&report), "output_too_large", "{report:?}");
        let written = std::fs::metadata(fx.root.path().join("o.json"))
            .unwrap()
            .len();
        assert!(written <= 1 << 20, "{written} bytes written");
        // Python ignores SIGXFSZ: its write fails (EFBIG) and it exits 1, saying why.
        fx.script(
            "big.py.sh",
            "exec python3 -c \"open('p.json','wb').write(b'0' * 8388608)\"\n",
        );
        let mut request = fx.request("big.py.sh", "p.json", 10_000);
        request.max_file_bytes = Some(1 << 20);
        let report = run(&fx.root, &request).await;
        assert_eq!(code(&report), "output_too_large", "{report:?}");
    }

    #[tokio::test]
    async fn a_jobs_variables_reach_the_script_but_never_override_the_nodes() {
        let fx = Fixture::new("jobenv");
        fx.script("env.sh", "env > env.txt; echo '{}' > o.json\n");
        let mut request = fx.request("env.sh", "o.json", 5_000);
        request.job_env = vec![
            ("OMP_NUM_THREADS".into(), "3".into()),
            ("CUDA_VISIBLE_DEVICES".into(), "7".into()),
        ];
        let report = run(&fx.root, &request).await;
        assert_eq!(code(&report), "ok", "{report:?}");
        let dumped = std::fs::read_to_string(fx.root.path().join("env.txt")).unwrap();
        let lines: Vec<&str> = dumped.lines().collect();
        assert!(lines.contains(&"OMP_NUM_THREADS=3"), "{lines:?}");
        assert!(lines.contains(&"CUDA_VISIBLE_DEVICES=1"), "{lines:?}");
        assert!(!lines.contains(&"CUDA_VISIBLE_DEVICES=7"), "{lines:?}");
    }

    #[tokio::test]
    async fn success_returns_output_args_and_env_without_a_shell() {
        let fx = Fixture::new("ok");
        // `$1` is passed as one argv entry: the semicolon is data, not a shell command separator.
        fx.script("ok.sh", "printf '{\"arg\":\"%s\",\"gpu\":\"%s\"}' \"$1\" \"$CUDA_VISIBLE_DEVICES\" > out/r.json\necho done\n");
        let mut request = fx.request("ok.sh", "out/r.json", 5_000);
        request.args = vec!["a; touch pwned".into()];
        let report = run(&fx.root, &request).await;
        assert_eq!(code(&report), "ok", "{report:?}");
        assert_eq!(
            report.outcome.as_ref().unwrap(),
            br#"{"arg":"a; touch pwned","gpu":"1"}"#
        );
        assert_eq!(report.exit.code, Some(0));
        assert_eq!(report.stdout_tail, "done\n");
        assert!(!fx.root.path().join("pwned").exists());
        report.remove_output(&fx.root).unwrap();
        assert!(!fx.root.path().join("out/r.json").exists());
    }

    #[tokio::test]
    async fn exit_zero_without_output_is_missing() {
        let fx = Fixture::new("missing");
        fx.script("s.sh", "exit 0\n");
        assert_eq!(
            code(&run(&fx.root, &fx.request("s.sh", "o.json", 5_000)).await),
            "missing_output"
        );
    }

    #[tokio::test]
    async fn untouched_old_file_is_stale_but_rewritten_file_is_fresh() {
        let fx = Fixture::new("stale");
        let out = fx.root.path().join("o.json");
        std::fs::write(&out, "{}").unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&out)
            .unwrap()
            .set_modified(old)
            .unwrap();
        fx.script("s.sh", "exit 0\n");
        let report = run(&fx.root, &fx.request("s.sh", "o.json", 5_000)).await;
        assert_eq!(code(&report), "stale_output");
        // Not written by the run, so not removed after it: a retry finds it stale again.
        report.remove_output(&fx.root).unwrap();
        assert!(out.exists());
        fx.script("w.sh", "echo '{\"v\":1}' > o.json\n");
        let report = run(&fx.root, &fx.request("w.sh", "o.json", 5_000)).await;
        assert_eq!(code(&report), "ok");
        report.remove_output(&fx.root).unwrap();
        assert!(!out.exists());
    }

    #[tokio::test]
    async fn error_status_nonzero_exit_empty_and_invalid_json_fail() {
        let fx = Fixture::new("status");
        fx.script(
            "err.sh",
            "echo '{\"status\":\"error\",\"error\":\"boom\"}' > o.json\n",
        );
        let report = run(&fx.root, &fx.request("err.sh", "o.json", 5_000)).await;
        assert_eq!(
            report.outcome,
            Err(RunFailure::StatusError {
                message: "boom".into()
            })
        );
        assert_eq!(
            report.error_output.as_deref(),
            Some(&b"{\"status\":\"error\",\"error\":\"boom\"}\n"[..])
        );
        fx.script("nz.sh", "echo '{}' > o.json; echo bad >&2; exit 3\n");
        let report = run(&fx.root, &fx.request("nz.sh", "o.json", 5_000)).await;
        assert_eq!(code(&report), "exit_status");
        assert_eq!(report.exit.code, Some(3));
        assert_eq!(report.stderr_tail, "bad\n");
        fx.script("empty.sh", ": > o.txt\n");
        assert_eq!(
            code(&run(&fx.root, &fx.request("empty.sh", "o.txt", 5_000)).await),
            "empty_output"
        );
        fx.script("bad.sh", "echo 'not json' > o.json\n");
        assert_eq!(
            code(&run(&fx.root, &fx.request("bad.sh", "o.json", 5_000)).await),
            "invalid_json_output"
        );
        fx.script("csv.sh", "echo 'a,b' > o.csv\n");
        assert_eq!(
            code(&run(&fx.root, &fx.request("csv.sh", "o.csv", 5_000)).await),
            "ok"
        );
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_process_group() {
        let fx = Fixture::new("timeout");
        // The grandchild ignores SIGTERM and records its pid; it must be gone after the run.
        fx.script(
            "t.sh",
            "sh -c 'trap \"\" TERM; echo $$ > child.pid; sleep 30' &\nsleep 30\n",
        );
        let report = run(&fx.root, &fx.request("t.sh", "o.json", 500)).await;
        assert_eq!(code(&report), "timeout");
        assert!(report.exit.timed_out);
        let pid = std::fs::read_to_string(fx.root.path().join("child.pid")).unwrap();
        let alive = || {
            Path::new(&format!("/proc/{}", pid.trim())).exists()
                && !std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
                    .unwrap_or_default()
                    .contains(") Z ")
        };
        // SIGKILL is sent before `run` returns, but a loaded machine may take a moment to run the
        // killed process's exit (its pipes close first, which is what ended the run).
        let deadline = Instant::now() + Duration::from_secs(2);
        while alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!alive(), "grandchild {pid} survived the timeout");
    }

    #[tokio::test]
    async fn background_helpers_are_killed_after_a_normal_exit() {
        let fx = Fixture::new("bg");
        fx.script("b.sh", "sleep 30 &\necho $! > bg.pid\necho '{}' > o.json\n");
        let report = run(&fx.root, &fx.request("b.sh", "o.json", 5_000)).await;
        assert_eq!(code(&report), "ok");
        let pid = std::fs::read_to_string(fx.root.path().join("bg.pid")).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "background helper {pid} still running"
        );
    }

    #[tokio::test]
    async fn paths_outside_the_root_are_refused() {
        let fx = Fixture::new("escape");
        std::fs::write(fx.dir.join("outside.sh"), "echo '{}' > o.json\n").unwrap();
        std::os::unix::fs::symlink(fx.dir.join("outside.sh"), fx.root.path().join("link.sh"))
            .unwrap();
        std::os::unix::fs::symlink(&fx.dir, fx.root.path().join("updir")).unwrap();
        fx.script("ok.sh", "echo '{}' > o.json\n");
        let outside = fx.dir.join("outside.sh").display().to_string();
        for (script, output) in [
            ("../outside.sh", "o.json"),
            (outside.as_str(), "o.json"),
            ("link.sh", "o.json"),
            ("sub/../../outside.sh", "o.json"),
            ("ok.sh", "../o.json"),
            ("ok.sh", "/tmp/o.json"),
            ("ok.sh", "updir/o.json"),
        ] {
            let report = run(&fx.root, &fx.request(script, output, 5_000)).await;
            assert_eq!(
                code(&report),
                "path_escapes_root",
                "{script} -> {output}: {report:?}"
            );
            assert_ne!(
                report.outcome.unwrap_err().reason().class(),
                seedq_protocol::ReasonClass::Retryable
            );
        }
        // Absolute paths inside the root and harmless `..` are fine.
        let inside = fx.root.path().join("ok.sh").display().to_string();
        assert_eq!(
            code(&run(&fx.root, &fx.request(&inside, "x/../o.json", 5_000)).await),
            "ok"
        );
        assert_eq!(
            code(&run(&fx.root, &fx.request("nope.sh", "o.json", 5_000)).await),
            "script_not_found"
        );
    }

    #[tokio::test]
    async fn output_turned_into_an_outside_symlink_is_refused_and_not_followed_on_removal() {
        let fx = Fixture::new("outlink");
        let victim = fx.dir.join("victim.json");
        std::fs::write(&victim, "{\"keep\":true}").unwrap();
        fx.script("s.sh", &format!("ln -s {} o.json\n", victim.display()));
        let report = run(&fx.root, &fx.request("s.sh", "o.json", 5_000)).await;
        assert_eq!(code(&report), "path_escapes_root");
        report.remove_output(&fx.root).unwrap();
        assert!(victim.exists());
    }

    #[tokio::test]
    async fn tails_keep_the_last_bytes_and_a_missing_interpreter_is_reported() {
        let fx = Fixture::new("tail");
        fx.script(
            "s.sh",
            "i=0; while [ $i -lt 100 ]; do echo line$i; i=$((i+1)); done; echo '{}' > o.json\n",
        );
        let report = run(&fx.root, &fx.request("s.sh", "o.json", 5_000)).await;
        assert_eq!(report.stdout_tail.len(), 64);
        assert!(report.stdout_tail.ends_with("line99\n"));
        let mut request = fx.request("s.sh", "o.json", 5_000);
        request.interpreter = PathBuf::from("/nonexistent/python");
        assert_eq!(code(&run(&fx.root, &request).await), "spawn_failed");
    }

    /// The private directories left under the root's [`PRIVATE_OUTPUTS`] (any depth).
    fn private_dirs_left(fx: &Fixture) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                out.push(entry.path());
                walk(&entry.path(), out);
            }
        }
        let mut out = Vec::new();
        walk(&fx.root.path().join(PRIVATE_OUTPUTS), &mut out);
        out
    }

    #[tokio::test]
    async fn the_output_dir_placeholder_and_variable_name_a_private_directory() {
        let fx = Fixture::new("private");
        // Writes its argument's file and records where the variable points.
        fx.script(
            "p.sh",
            "printf '{\"arg\":\"%s\",\"env\":\"%s\"}' \"$1\" \"$SEEDQ_OUTPUT_DIR\" > \"$1\"\n",
        );
        let mut request = fx.request("p.sh", "{output_dir}/r.json", 5_000);
        request.args = vec!["{output_dir}/r.json".into()];
        // A node's `[nodes.env]` cannot redirect the directory.
        request.env.push(("SEEDQ_OUTPUT_DIR".into(), "/tmp".into()));
        let report = run(&fx.root, &request).await;
        assert_eq!(code(&report), "ok", "{report:?}");
        let written: serde_json::Value =
            serde_json::from_slice(report.outcome.as_ref().unwrap()).unwrap();
        let dir = report.private_dir.clone().unwrap();
        assert!(
            dir.starts_with(fx.root.path().join(PRIVATE_OUTPUTS).join("batch/task")),
            "{dir:?}"
        );
        assert_eq!(written["env"], dir.display().to_string());
        assert_eq!(written["arg"], dir.join("r.json").display().to_string());
        assert_eq!(
            report.output_path.as_deref(),
            Some(dir.join("r.json").as_path())
        );
        // Nothing was written under a literal `{output_dir}` in the root.
        assert!(!fx.root.path().join("{output_dir}").exists());
        report.remove_output(&fx.root).unwrap();
        assert!(!dir.exists());
        assert_eq!(
            private_dirs_left(&fx),
            Vec::<PathBuf>::new(),
            "emptied parents are pruned"
        );
    }

    #[tokio::test]
    async fn concurrent_runs_writing_one_output_name_each_keep_their_own() {
        let fx = Fixture::new("concurrent");
        // Writes first and lingers: on a shared path the other run would overwrite the file
        // while this one is still running, and whichever ends first would collect it.
        fx.script(
            "w.sh",
            "echo \"{\\\"tag\\\": \\\"$2\\\"}\" > \"$1\"; sleep 0.5\n",
        );
        let request = |tag: &str| {
            let mut request = fx.request("w.sh", "{output_dir}/same.json", 5_000);
            request.args = vec!["{output_dir}/same.json".into(), tag.into()];
            request
        };
        let (first, second) = (request("first"), request("second"));
        assert_ne!(first.output_dir, second.output_dir);
        let (a, b) = tokio::join!(run(&fx.root, &first), run(&fx.root, &second));
        for (report, tag) in [(&a, "first"), (&b, "second")] {
            assert_eq!(code(report), "ok", "{report:?}");
            let value: serde_json::Value =
                serde_json::from_slice(report.outcome.as_ref().unwrap()).unwrap();
            assert_eq!(value["tag"], tag);
        }
        a.remove_output(&fx.root).unwrap();
        assert!(
            b.output_path.as_ref().unwrap().exists(),
            "removing one run's output removed the other's"
        );
        b.remove_output(&fx.root).unwrap();
        assert_eq!(private_dirs_left(&fx), Vec::<PathBuf>::new());
    }

    #[tokio::test]
    async fn misplaced_placeholders_are_refused_and_their_directory_removed() {
        let fx = Fixture::new("placeholder");
        fx.script("ok.sh", "echo '{}' > o.json\n");
        for output in [
            "out/{output_dir}/r.json",
            "{output_dir}",
            "{output_dir}/",
            "{output_dir}r.json",
            "{output_dir}/../r.json",
            "{output_dir}/a/{output_dir}",
        ] {
            let report = run(&fx.root, &fx.request("ok.sh", output, 5_000)).await;
            assert_eq!(code(&report), "invalid_message", "{output}: {report:?}");
            assert_eq!(
                report.outcome.as_ref().unwrap_err().reason().class(),
                seedq_protocol::ReasonClass::Refused
            );
            report.remove_output(&fx.root).unwrap();
        }
        assert_eq!(private_dirs_left(&fx), Vec::<PathBuf>::new());
        assert_eq!(
            placeholder_relative("{output_dir}/./a/../b/c.json"),
            Ok(PathBuf::from("b/c.json"))
        );
    }

    #[tokio::test]
    async fn a_private_directory_redirected_outside_the_root_is_refused() {
        let fx = Fixture::new("privlink");
        let outside = fx.dir.join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::create_dir_all(fx.root.path().join(PRIVATE_OUTPUTS)).unwrap();
        // What an earlier script could have left behind.
        std::os::unix::fs::symlink(&outside, fx.root.path().join(PRIVATE_OUTPUTS).join("batch"))
            .unwrap();
        fx.script("ok.sh", "echo '{}' > \"$SEEDQ_OUTPUT_DIR/o.json\"\n");
        let report = run(&fx.root, &fx.request("ok.sh", "{output_dir}/o.json", 5_000)).await;
        assert_eq!(code(&report), "path_escapes_root", "{report:?}");
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "created outside the root"
        );
    }

    #[test]
    fn only_fixed_outputs_are_shared_between_runs() {
        let fx = Fixture::new("shared");
        assert_eq!(
            fx.root.shared_output("out/./a.json"),
            Some(fx.root.path().join("out/a.json"))
        );
        assert_eq!(fx.root.shared_output("{output_dir}/a.json"), None);
        assert_eq!(fx.root.shared_output("../a.json"), None);
        let (a, b) = (
            private_output_dir("b", "t", 1),
            private_output_dir("b", "t", 1),
        );
        assert_ne!(a, b);
        assert!(private_output_dir("..", ".", 2).starts_with(".seedq-out/_../_."));
    }

    #[test]
    fn json_status_rules() {
        assert!(check_json_status("a.json", br#"{"status":"success"}"#).is_ok());
        assert!(check_json_status("a.json", br#"[1,2]"#).is_ok());
        assert!(check_json_status("a.json", br#"{"status":"ERROR"}"#).is_err());
        assert!(check_json_status("a.json", br#"{"success":false}"#).is_err());
        assert!(check_json_status("a.txt", b"plain text").is_ok());
        assert!(check_json_status("a.txt", br#"{"status":"error"}"#).is_err());
    }
}
