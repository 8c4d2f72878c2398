//! Verification by redundancy: the vocabulary of a chunk run a second time.
//!
//! A fraction of every seed job's chunks (`[scheduler] verify_fraction`, `--verify-fraction`),
//! drawn at random when each result is applied, is run again on another node or backend
//! ([`CheckKind::Verify`]) and the two results are compared by [`result_digest`]. A mismatch is
//! decided by the CPU reference; the wrong slot is quarantined and every chunk it completed
//! since its last passed self-test is run again elsewhere ([`CheckKind::Redo`]), replacing what it
//! had applied. `docs/verification.md` has the design and its guarantees.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::chunk::ChunkResult;

/// Why a chunk runs again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// Drawn for verification: compare with the applied result.
    Verify,
    /// Completed by a slot later found wrong: the new result replaces the applied one.
    Redo,
}

impl CheckKind {
    /// The stable text (`verify`, `redo`).
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Verify => "verify",
            CheckKind::Redo => "redo",
        }
    }
}

impl std::fmt::Display for CheckKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One slot of one node, as results name it: `<node>/<slot>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SlotRef {
    /// The node's name.
    pub node: String,
    /// The slot (`gpu0`, `cpu1`).
    pub slot: String,
    /// The slot's backend (`SieveBackend::describe()`): a check prefers another one.
    #[serde(default)]
    pub backend: String,
}

impl SlotRef {
    /// `<node>/<slot>`: the key of the slot's record of bad results and its check log.
    pub fn key(&self) -> String {
        format!("{}/{}", self.node, self.slot)
    }
}

/// Hand-backs after which a check takes any other slot, not only another node or backend.
pub const CHECK_HOPS_OTHER_SLOT: u32 = 6;
/// Hand-backs after which a verification nobody else can run is given up as unverifiable
/// (a cluster of one slot), and a redo runs on any slot.
pub const CHECK_HOPS_ANY: u32 = 12;

/// The order a check message carries: what to do and whom to avoid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOrder {
    /// Verify or redo.
    pub kind: CheckKind,
    /// The slot whose result is checked: the check runs elsewhere.
    pub avoid: SlotRef,
    /// How often slots that may not run it handed it back.
    #[serde(default)]
    pub hops: u32,
}

/// Who may run a check, from the receiving slot's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eligibility {
    /// Run it here.
    Run,
    /// Hand it back for a better-placed slot.
    PassOn,
    /// Nobody else took it: a verification is given up as unverifiable.
    GiveUp,
}

impl CheckOrder {
    /// Whether `me` should run this check: another node or backend first; after
    /// [`CHECK_HOPS_OTHER_SLOT`] hand-backs any other slot; after [`CHECK_HOPS_ANY`] a redo runs
    /// anywhere (the slot has passed a self-test again since) and a verification is given up.
    pub fn eligibility(&self, me: &SlotRef) -> Eligibility {
        let other_place = me.node != self.avoid.node || me.backend != self.avoid.backend;
        let other_slot = other_place || me.slot != self.avoid.slot;
        if other_place || (self.hops >= CHECK_HOPS_OTHER_SLOT && other_slot) {
            return Eligibility::Run;
        }
        if self.hops < CHECK_HOPS_ANY {
            return Eligibility::PassOn;
        }
        match self.kind {
            CheckKind::Redo => Eligibility::Run,
            CheckKind::Verify => Eligibility::GiveUp,
        }
    }
}

/// The fingerprint two runs of a chunk are compared by: SHA-256 (first 16 bytes, hex) over
/// the seeds tested, every survivor record (the compact pieces, which every backend encodes
/// identically: fixed parts, seed order), the count-only counts and histograms, and the flagged
/// seeds of correlation and analysis jobs. Their statistics (floats from parallel reductions)
/// are not compared bit for bit: which seeds are flagged is.
pub fn result_digest(r: &ChunkResult) -> String {
    let mut h = Sha256::new();
    h.update(r.seeds_tested.to_le_bytes());
    h.update(r.survivor_count.to_le_bytes());
    h.update((r.survivor_pieces.len() as u64).to_le_bytes());
    for piece in &r.survivor_pieces {
        h.update((piece.len() as u64).to_le_bytes());
        h.update(piece);
    }
    if let Some(counts) = &r.counts {
        h.update(serde_json::to_vec(counts).expect("counts serialize"));
    }
    h.update((r.flagged.len() as u64).to_le_bytes());
    for f in &r.flagged {
        h.update(f.seed.to_le_bytes());
    }
    let bytes = h.finalize();
    bytes[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me(node: &str, slot: &str, backend: &str) -> SlotRef {
        SlotRef {
            node: node.into(),
            slot: slot.into(),
            backend: backend.into(),
        }
    }

    #[test]
    fn checks_prefer_another_node_or_backend_then_any_other_slot() {
        let mut order = CheckOrder {
            kind: CheckKind::Verify,
            avoid: me("rig1", "gpu3", "rocm"),
            hops: 0,
        };
        assert_eq!(
            order.eligibility(&me("zeus", "gpu0", "cuda")),
            Eligibility::Run
        );
        assert_eq!(
            order.eligibility(&me("rig1", "cpu0", "cpu")),
            Eligibility::Run
        );
        assert_eq!(
            order.eligibility(&me("rig1", "gpu4", "rocm")),
            Eligibility::PassOn
        );
        assert_eq!(
            order.eligibility(&me("rig1", "gpu3", "rocm")),
            Eligibility::PassOn
        );
        order.hops = CHECK_HOPS_OTHER_SLOT;
        assert_eq!(
            order.eligibility(&me("rig1", "gpu4", "rocm")),
            Eligibility::Run
        );
        assert_eq!(
            order.eligibility(&me("rig1", "gpu3", "rocm")),
            Eligibility::PassOn
        );
        order.hops = CHECK_HOPS_ANY;
        assert_eq!(
            order.eligibility(&me("rig1", "gpu3", "rocm")),
            Eligibility::GiveUp
        );
        order.kind = CheckKind::Redo;
        assert_eq!(
            order.eligibility(&me("rig1", "gpu3", "rocm")),
            Eligibility::Run
        );
    }

    #[test]
    fn the_digest_sees_every_decision_and_not_the_timing() {
        let base = ChunkResult {
            v: 1,
            job_id: "j".into(),
            chunk: 3,
            attempt: 1,
            epoch: 9,
            seeds_tested: 100,
            survivor_pieces: vec![vec![1, 2, 3]],
            survivor_count: 2,
            counts: None,
            flagged: Vec::new(),
            summary: None,
            duration_secs: 1.0,
            units_per_sec: None,
            node: "a".into(),
            slot: "gpu0".into(),
            backend: "cuda".into(),
            gpu_model: "x".into(),
            finished_at_ms: 5,
        };
        let d = result_digest(&base);
        assert_eq!(d.len(), 32);
        let mut other = base.clone();
        other.duration_secs = 7.0;
        other.node = "b".into();
        other.attempt = 4;
        assert_eq!(
            result_digest(&other),
            d,
            "who ran it and how long do not count"
        );
        let mut dropped = base.clone();
        dropped.survivor_pieces = vec![vec![1, 2]];
        dropped.survivor_count = 1;
        assert_ne!(result_digest(&dropped), d);
        let mut split = base.clone();
        split.survivor_pieces = vec![vec![1], vec![2, 3]];
        assert_ne!(
            result_digest(&split),
            d,
            "piece boundaries are part of the encoding"
        );
    }
}
