//! A compact, self-contained image of a replica (documents, accepted hashes, chains, held excluded changes,
//! equivocations), so that opening a replica with many changes loads documents instead of replaying changes.
//! The facts are not stored: they are recomputed from the council changes on load.

use std::collections::HashMap;

use automerge::{Automerge, ChangeHash};
use model::DocId;

use crate::codec::{Reader, write_varint};
use crate::envelope::Envelope;
use crate::replica::{Equivocation, OwnedState};
use crate::{Actor, Error, FederationId, Replica};

/// Encoder and decoder of replica snapshots.
pub struct ReplicaState;

impl ReplicaState {
    const MAGIC: &'static [u8; 8] = b"GMSNAP02";

    /// Encodes the state of `replica`.
    pub fn encode(replica: &Replica) -> Vec<u8> {
        let parts = replica.state_parts();
        let mut out = Vec::new();
        out.extend_from_slice(Self::MAGIC);
        out.push(u8::from(parts.federation.is_some()));
        out.extend_from_slice(&parts.federation.map(|f| f.0).unwrap_or([0; 32]));
        write_varint(&mut out, parts.docs.len() as u64);
        for (id, doc) in parts.doc_ids.iter().zip(parts.docs) {
            write_text(&mut out, &id.to_string());
            write_bytes(&mut out, &doc.save());
        }
        let mut known: Vec<_> = parts.known.iter().collect();
        known.sort();
        write_varint(&mut out, known.len() as u64);
        for (hash, (number, max_op)) in known {
            out.extend_from_slice(&hash.0);
            write_varint(&mut out, u64::from(*number));
            write_varint(&mut out, *max_op);
        }
        write_varint(&mut out, parts.chains.len() as u64);
        for ((number, actor), (seq, max_op)) in &parts.chains {
            write_varint(&mut out, u64::from(*number));
            out.extend_from_slice(&actor.key);
            write_varint(&mut out, u64::from(actor.epoch));
            write_varint(&mut out, *seq);
            write_varint(&mut out, *max_op);
        }
        write_varint(&mut out, parts.excluded.len() as u64);
        for envelope in &parts.excluded {
            write_bytes(&mut out, &envelope.to_bytes());
        }
        write_varint(&mut out, parts.equivocations.len() as u64);
        for equivocation in &parts.equivocations {
            write_text(&mut out, &equivocation.doc.to_string());
            out.extend_from_slice(&equivocation.actor.key);
            write_varint(&mut out, u64::from(equivocation.actor.epoch));
            write_varint(&mut out, equivocation.seq);
            out.extend_from_slice(&equivocation.changes[0].0);
            out.extend_from_slice(&equivocation.changes[1].0);
        }
        out
    }

    /// Decodes a state written by [`ReplicaState::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Replica, Error> {
        let bad = |detail: String| Error::Snapshot {
            doc: "snapshot".into(),
            detail,
        };
        let mut reader = Reader::new(bytes);
        let r = &mut reader;
        let magic: [u8; 8] = r.array("magic").map_err(|e| bad(e.to_string()))?;
        if &magic != Self::MAGIC {
            return Err(bad("wrong magic (a snapshot of another version)".into()));
        }
        let has_federation = r.take(1, "flag").map_err(|e| bad(e.to_string()))?[0] == 1;
        let federation: [u8; 32] = r.array("federation").map_err(|e| bad(e.to_string()))?;
        let count = |r: &mut Reader<'_>, what: &'static str| {
            r.varint_at_most(bytes.len(), what)
                .map_err(|e| bad(e.to_string()))
        };
        let mut docs = Vec::new();
        for _ in 0..count(r, "doc count")? {
            let name = read_text(r).map_err(bad)?;
            let doc_id: DocId = name.parse()?;
            let saved = read_bytes(r).map_err(bad)?;
            let doc = Automerge::load(saved).map_err(|e| Error::Snapshot {
                doc: doc_id.to_string(),
                detail: e.to_string(),
            })?;
            docs.push((doc_id, doc));
        }
        let mut known = HashMap::new();
        for _ in 0..count(r, "known")? {
            let hash: [u8; 32] = r.array("hash").map_err(|e| bad(e.to_string()))?;
            let number = r.varint("doc number").map_err(|e| bad(e.to_string()))?;
            let max_op = r.varint("max op").map_err(|e| bad(e.to_string()))?;
            known.insert(ChangeHash(hash), (number as u32, max_op));
        }
        let mut chains = Vec::new();
        for _ in 0..count(r, "chains")? {
            let number = r.varint("doc number").map_err(|e| bad(e.to_string()))?;
            let key: [u8; 32] = r.array("actor").map_err(|e| bad(e.to_string()))?;
            let epoch = r.varint("epoch").map_err(|e| bad(e.to_string()))?;
            let seq = r.varint("seq").map_err(|e| bad(e.to_string()))?;
            let max_op = r.varint("max op").map_err(|e| bad(e.to_string()))?;
            let actor = Actor {
                key,
                epoch: epoch as u32,
            };
            chains.push(((number as u32, actor), (seq, max_op)));
        }
        let mut excluded = Vec::new();
        for _ in 0..count(r, "excluded")? {
            let bytes = read_bytes(r).map_err(bad)?;
            excluded.push(Envelope::from_bytes(bytes).map_err(|e| bad(e.to_string()))?);
        }
        let mut equivocations = Vec::new();
        for _ in 0..count(r, "equivocations")? {
            let doc: DocId = read_text(r).map_err(bad)?.parse()?;
            let key: [u8; 32] = r.array("actor").map_err(|e| bad(e.to_string()))?;
            let epoch = r.varint("epoch").map_err(|e| bad(e.to_string()))?;
            let seq = r.varint("seq").map_err(|e| bad(e.to_string()))?;
            let a: [u8; 32] = r.array("change").map_err(|e| bad(e.to_string()))?;
            let b: [u8; 32] = r.array("change").map_err(|e| bad(e.to_string()))?;
            equivocations.push(Equivocation {
                doc,
                actor: Actor {
                    key,
                    epoch: epoch as u32,
                },
                seq,
                changes: [ChangeHash(a), ChangeHash(b)],
            });
        }
        Replica::from_state(OwnedState {
            federation: has_federation.then_some(FederationId(federation)),
            docs,
            known,
            chains,
            excluded,
            equivocations,
        })
    }
}

fn write_text(out: &mut Vec<u8>, text: &str) {
    write_bytes(out, text.as_bytes());
}

fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    write_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn read_bytes<'a>(reader: &mut Reader<'a>) -> Result<&'a [u8], String> {
    let len = reader
        .varint_at_most(reader.remaining(), "length")
        .map_err(|e| e.to_string())?;
    reader.take(len, "bytes").map_err(|e| e.to_string())
}

fn read_text(reader: &mut Reader<'_>) -> Result<String, String> {
    let bytes = read_bytes(reader)?;
    String::from_utf8(bytes.to_vec()).map_err(|_| "text is not UTF-8".to_owned())
}
